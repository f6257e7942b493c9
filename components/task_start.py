"""The start of every pipeline task, run by the component's command (see `components.launcher`).

The command execs the interpreter with this file's text as ``-c`` code, in place of kfp's
``python -m kfp.dsl.executor_main``, with the same arguments. In that one process it

1. checks that every folder the task will write can be written by this user: the parent of each output
   artifact's local path (what kfp's executor creates before any component code runs; a ``gs://`` URI
   is the path under Vertex AI's ``/gcs`` mount), the artifact folder itself when it exists, and the
   folder of the executor output file. A folder that cannot be created or written stops the task with
   one line naming the path, the user (uid) and the fix, and exit status 1;
2. runs ``kfp.dsl.executor_main`` as ``__main__``, as ``python -m`` would. An OS error that ends the
   stage (a full or read-only disk, refused permission, a file where a folder belongs, too many open
   files; also TensorFlow's file errors) is printed as one line naming the path and the fix (exit status
   1, no traceback); any other error keeps its traceback.

It installs a SIGTERM handler that ends the process with status 143, as the default action would:
as a container's first process (PID 1) the interpreter would otherwise not be ended at all (Linux drops
a signal that PID 1 has no handler for), and the task would run on until the platform's SIGKILL. The
handler is marked ``default_action``: the stages that stop gracefully (`deepface.parallel`, training)
replace it as they would replace the default.

It needs only the standard library and kfp (and ``deepface.errors`` when the image has it). Its text is
part of every component's command, hence of the compiled template and of Vertex AI's cache key, so it
is kept free of run-dependent content.
"""

import json
import os
import sys
import tempfile

EXECUTOR_MODULE = "kfp.dsl.executor_main"
# Where kfp maps remote artifact URIs (kfp.dsl.types.artifact_types): mounts of the bucket on the node.
MOUNTS = ("/gcs/", "/minio/", "/s3/")


def _option(argv, name):
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``argv``, or None."""
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def output_paths(executor_input):
    """``[(what, local path)]`` of everything the task writes, as kfp's executor maps them."""
    from kfp.dsl.types import artifact_types

    outputs = executor_input.get("outputs", {})
    paths = []
    for name, artifacts in sorted(outputs.get("artifacts", {}).items()):
        listed = artifacts.get("artifacts") or []
        if listed:  # the executor makes the first artifact of each output (Executor.__init__)
            artifact = artifact_types.Artifact(uri=listed[0].get("uri", ""), metadata=listed[0].get("metadata"))
            paths.append((f"output {name!r}", artifact.path))
    for name, parameter in sorted(outputs.get("parameters", {}).items()):
        if parameter.get("outputFile"):
            paths.append((f"output parameter {name!r}", parameter["outputFile"]))
    if outputs.get("outputFile"):
        paths.append(("the executor output file", outputs["outputFile"]))
    return paths


def _user():
    uid = os.geteuid()
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _fix(folder):
    user = f"uid {os.geteuid()}"
    if folder.startswith(MOUNTS):
        mount = "/" + folder.split("/")[1]
        return (
            f"the {mount} mount must let {user} write (on Vertex AI, /gcs is Cloud Storage FUSE: check the "
            "pipeline root bucket and the service account's write access to it), or run the image as root: "
            "RUNTIME_USER=0:0 docker/build.sh, with its own DEEPFACE_IMAGE_REPO"
        )
    return f"make {folder} writable for {user}, or give the pipeline a root that this user can write"


def unwritable(what, path, folder):
    """None when ``folder`` can be created and a file created in it, else the one-line error."""
    try:
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".deepface-write-check-", dir=folder)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or error.__class__.__name__
        return (
            f"deepface task: cannot write {what} at {path}: folder {folder} as {_user()}: {reason}. "
            f"Fix: {_fix(folder)}"
        )
    return None


def check_outputs(argv):
    """The one-line error for the first folder of the task's outputs that cannot be written, or None
    (also None without a readable ``--executor_input``: kfp's executor then reports it)."""
    text = _option(argv, "--executor_input")
    try:
        executor_input = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(executor_input, dict):
        return None
    for what, path in output_paths(executor_input):
        folders = [os.path.dirname(path) or "."]
        if what.startswith("output ") and os.path.isdir(path):
            folders.append(path)  # written by the stage itself (a retry reuses it)
        for folder in folders:
            error = unwritable(what, path, folder)
            if error:
                return error
    return None


def end_on_sigterm(signum, frame):
    """SIGTERM's default action, as a handler: exit with status 128 + 15."""
    raise SystemExit(128 + signum)


end_on_sigterm.default_action = True


def main(argv):
    import signal

    signal.signal(signal.SIGTERM, end_on_sigterm)
    error = check_outputs(argv)
    if error:
        print(error, file=sys.stderr, flush=True)
        raise SystemExit(1)
    import runpy

    sys.argv = [sys.argv[0], *argv]
    try:
        runpy.run_module(EXECUTOR_MODULE, run_name="__main__", alter_sys=True)
    except Exception as error:
        message = system_error(error)
        if message is None:
            raise
        print(f"deepface task: {message}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def system_error(error):
    """The one line of an OS error (or TensorFlow file error) that ended the stage, naming the path and the
    fix (`deepface.errors.system_error_message`); None for any other error, which keeps its traceback."""
    try:
        from deepface.errors import system_error_message
    except ImportError:
        return None
    return system_error_message(error)


if __name__ == "__main__":
    main(sys.argv[1:])
