"""Cameras, rays and rendering; the one place the course states its camera convention."""
