"""File formats: MRC volumes and particle coordinate tables."""
