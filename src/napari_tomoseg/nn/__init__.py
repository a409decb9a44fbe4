"""The CNN engine: networks, training from boxes, model files, segmentation, devices."""
