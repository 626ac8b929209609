"""Data: procedural shapes, mesh files and the samples models train on."""
