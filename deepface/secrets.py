"""Reading one secret version from Google Secret Manager (the credentials of an https data source).

`read_secret` takes the version's resource name (``projects/P/secrets/S/versions/V`` or
``.../versions/latest``), never its value, and returns the value as text. The value is never logged, and
no error message holds it: errors name the secret and the fix.

The client uses the process's credentials (on Vertex AI, the run's service account). For tests and
emulators only, the environment variable ``DEEPFACE_SECRET_MANAGER_ENDPOINT`` (``http://127.0.0.1:PORT``)
points the client at another endpoint over REST with anonymous credentials.
"""

from __future__ import annotations

import logging
import os

from deepface.errors import DeepFaceError

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "DEEPFACE_SECRET_MANAGER_ENDPOINT"  # tests and emulators only
ACCESSOR_ROLE = "roles/secretmanager.secretAccessor"


def make_client():
    """A Secret Manager client: the default one, or (``$DEEPFACE_SECRET_MANAGER_ENDPOINT`` set) one
    talking REST to that endpoint with anonymous credentials."""
    from google.cloud import secretmanager

    endpoint = os.environ.get(ENDPOINT_ENV)
    if not endpoint:
        return secretmanager.SecretManagerServiceClient()
    from google.auth.credentials import AnonymousCredentials

    return secretmanager.SecretManagerServiceClient(
        client_options={"api_endpoint": endpoint}, transport="rest", credentials=AnonymousCredentials(),
    )


def read_secret(name: str, *, client=None) -> str:
    """The value of secret version ``name`` (``projects/P/secrets/S/versions/V``), as text.

    Args:
        name: the secret version's resource name (not its value).
        client: a ``SecretManagerServiceClient``; by default `make_client`.

    Raises:
        DeepFaceError: one line naming the secret and the fix (access refused, not found, no credentials,
            service unreachable, a value that is not UTF-8 text or is empty); never the value.
    """
    from google.api_core import exceptions
    from google.auth.exceptions import DefaultCredentialsError

    try:
        if client is None:
            client = make_client()
        response = client.access_secret_version(name=name)
    except (exceptions.PermissionDenied, exceptions.Forbidden):  # gRPC, REST
        raise DeepFaceError(
            f"secret {name}: access denied (HTTP 403): grant {ACCESSOR_ROLE} on the secret to the service "
            "account the run uses (or check the project and the secret's name)"
        ) from None
    except exceptions.NotFound:
        raise DeepFaceError(
            f"secret {name}: not found (HTTP 404): check the project, secret and version (auth_secret), or "
            "add a version to the secret"
        ) from None
    except (exceptions.Unauthenticated, exceptions.Unauthorized):
        raise DeepFaceError(f"secret {name}: the credentials were refused (HTTP 401): check them") from None
    except DefaultCredentialsError:
        raise DeepFaceError(
            f"secret {name}: no Google credentials found: run on Vertex AI with a service account, or run "
            "gcloud auth application-default login"
        ) from None
    except exceptions.GoogleAPICallError as error:
        raise DeepFaceError(
            f"secret {name}: Secret Manager answered {error.__class__.__name__} (HTTP {error.code}): "
            "run again, or check the secret"
        ) from None
    except exceptions.RetryError:
        raise DeepFaceError(f"secret {name}: Secret Manager could not be reached: run again") from None
    try:
        value = bytes(response.payload.data).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DeepFaceError(f"secret {name}: its value is not UTF-8 text: store the header as text") from None
    if not value:
        raise DeepFaceError(f"secret {name}: its value is empty: add a version holding the header")
    logger.info("read secret %s", name)  # the name only
    return value
