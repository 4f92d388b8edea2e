"""Test plugin: methods that misbehave on some images (NaN maps, exceptions) to test failure recording."""

from methods import Method, register_method


@register_method
class NaNOnSecond(Method):
    """Returns the image's mean-channel map, but NaN everywhere for the 2nd image of the list (coffee)."""

    id = "nan_on_coffee"
    family = "plugin"
    citation = "test plugin"

    def explain(self, model, x, targets):
        maps = x.mean(1).clone()
        # coffee is the only demo photo whose clean top-1 is espresso (967) with EfficientNet-Lite0
        maps[targets == 967] = float("nan")
        return maps


@register_method
class RaisesOnCoffee(Method):
    id = "raises_on_coffee"
    family = "plugin"
    citation = "test plugin"

    def explain(self, model, x, targets):
        if (targets == 967).any():
            raise RuntimeError("cannot explain espresso")
        return x.mean(1)
