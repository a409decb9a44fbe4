"""Looking at tomograms: thick slabs, display filters, pyramids, surfaces, numbers (no GUI)."""

from .display import DisplaySettings, SlabCache, display_plane, slab
from .measure import feature_numbers, particle_density
from .pyramid import multiscale_pyramid
from .surfaces import Surface, surface_from_volume

__all__ = ["DisplaySettings", "SlabCache", "Surface", "display_plane", "feature_numbers",
           "multiscale_pyramid", "particle_density", "slab", "surface_from_volume"]
