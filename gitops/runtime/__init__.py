"""Everything that talks to the Docker engine.

``objects`` holds plain wrappers (no docker import, so the planner can use
them); ``docker_runtime`` is the only module that imports the docker SDK.
"""
