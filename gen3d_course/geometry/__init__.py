"""Geometry: shape metrics and conversions between 3D representations."""
