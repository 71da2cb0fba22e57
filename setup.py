"""Build the Cython extensions: the kernel engine and its records, the sys.monitoring callbacks and the
profiled locks."""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# (module, source); each is built when its source exists.
SOURCES = [
    ("gyroscope.cyext._engine", "cyext/_engine.pyx"),
    ("gyroscope.cyext._views", "cyext/_views.pyx"),
    ("gyroscope.bridges._inproc", "bridges/_inproc.pyx"),
    ("gyroscope.bridges._locks", "bridges/_locks.pyx"),
]
extensions = [
    Extension(name, [src], include_dirs=[numpy.get_include()], extra_compile_args=["-O3"])
    for name, src in SOURCES if os.path.exists(src)
]

setup(ext_modules=cythonize(extensions, language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False,
                                                 "cdivision": True, "initializedcheck": False}))
