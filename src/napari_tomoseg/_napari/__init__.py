"""The napari face of napari-tomoseg: readers, writers, sample data and widgets.

Only this package imports napari, magicgui and Qt; each module is a thin
layer over a core call so the same work runs headless from ``tomoseg``.
"""
