"""The built-in recipes. Importing this package registers them; one file per method family."""
# The import order is the registration order: later files derive from earlier recipes.
# isort: skip_file
from . import moco  # noqa: F401
from . import simsiam  # noqa: F401
from . import leoclr  # noqa: F401
from . import synth  # noqa: F401
from . import simclr  # noqa: F401
from . import digits_textures  # noqa: F401  (after the digits recipes it derives from)
