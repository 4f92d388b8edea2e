"""Floor 1, the data: image lists, image sources (demo photos, an ILSVRC folder), decoding and checking, the
paper's preprocessing, the image cache of a stage, and CUB-200-2011's annotations. Imports only the core."""

from .errors import DataError  # noqa: F401
from .lists import read_image_list  # noqa: F401
from .preprocess import preprocess, resize, to_rgb  # noqa: F401
from .sources import DemoSource, FolderSource, ImageSource, check_images, format_bad_images, make_source  # noqa: F401
