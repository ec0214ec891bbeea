"""Everything that talks to the container engine.

``protocol`` says what the core needs (``Runtime``, ``ContainerConfig``);
``objects`` holds plain wrappers of the engine's listings (no docker import,
so the planner can use them); ``docker_runtime`` is the real runtime and the
only module that imports the docker SDK.
"""
