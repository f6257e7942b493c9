"""Helpers shared by the tests (fixtures live in tests/conftest.py):

    corpus       images of every kind a real dataset holds (formats, EXIF, damaged, hostile sizes)
    faults       running a stage as its real command line in a subprocess, and breaking it (SIGKILL, ...)
    servers      an HTTP file server and a GCS emulator on 127.0.0.1, for fetch
    fake_vertex  a fake Vertex AI / Kubeflow endpoint on 127.0.0.1, for the real client libraries
"""
