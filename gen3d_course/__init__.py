"""gen3d_course: support library of the gen3d course."""
