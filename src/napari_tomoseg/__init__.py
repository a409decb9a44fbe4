"""napari-tomoseg: CNN annotation of cellular cryo-electron tomograms.

The core (everything outside ``_napari``) never imports Qt or napari, so
it runs headless on clusters; ``napari_tomoseg._napari`` holds the plugin.
"""

__version__ = "0.1.0"
