"""Container images: references, a verified content-addressed store, safe unpacking, and the
translation of an image into a profile's root and process (see docs/images.md)."""
from .ref import Reference, ReferenceError, parse, registry_allowed
from .store import Image, ImageError, Store, default_root

__all__ = ["Image", "ImageError", "Reference", "ReferenceError", "Store", "default_root", "parse",
           "registry_allowed"]
