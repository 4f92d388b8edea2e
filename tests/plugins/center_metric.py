"""A metric plugin (tests): the share of a map's mass inside a central box."""


from benchmark.core.cost import Cost
from metrics.base import Metric, register_metric


@register_metric
class CentreMass(Metric):
    id = "centre_mass"
    category = "localisation"
    higher_is_better = True
    csv_prefix = "centre"
    description = "share of the (non-negative part of the) map inside the central half of each side"
    paper_params = {"margin": 0.25}

    def cost(self, model, method_cost=None):
        return Cost()

    def value_range(self):
        return 0.0, 1.0

    def compute(self, model, x, maps, targets, explainer=None, prepared=None):
        m = maps.clamp_min(0).float()
        h, w = m.shape[-2:]
        a, b = int(self.params["margin"] * h), int(self.params["margin"] * w)
        inner = m[:, a:h - a, b:w - b].sum(dim=(1, 2))
        return {"value": (inner / m.sum(dim=(1, 2)).clamp_min(1e-12)).double()}
