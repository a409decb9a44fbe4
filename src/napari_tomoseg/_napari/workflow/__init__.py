"""The TomoSeg dock's sections over one shared ``Workflow`` state."""
