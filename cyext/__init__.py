"""The kernel: the cell pool engine of KERNEL.md (Cython), its pure-Python twin, persistence."""
