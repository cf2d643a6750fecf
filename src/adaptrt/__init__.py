"""adaptrt: AI-guided personalised radiotherapy of brain tumours.

Three studies on one foundation:

* :mod:`adaptrt.response` — does a brain metastasis shrink after PULSAR? (Part I)
* :mod:`adaptrt.drift` — where will it move? Diffusion models of the post-treatment image (Part II)
* :mod:`adaptrt.target` — where will a glioblastoma recur? A CTV from AI predictions

Images are :class:`adaptrt.types.Volume` objects, indexed ``(z, y, x)`` with spacing in mm.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adaptrt")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
