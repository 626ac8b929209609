"""pytest runs the notebooks (nbval) in two xdist workers at once: their kernels use Unix
sockets, not TCP ports that the two workers could race for (see ``gen3d_course.kernels``)."""
from gen3d_course.kernels import use_ipc_kernels_in_nbval

use_ipc_kernels_in_nbval()
