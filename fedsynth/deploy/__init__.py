"""Flower's deployment engine for fedsynth: TLS certificates, SuperNode keys, loopback federations.

A real federation runs one ``flower-superlink`` at the coordinator and one ``flower-supernode``
per hospital (see ``deploy/README.md``). This package makes the credentials they need
(:mod:`fedsynth.deploy.certs`), serves the coordinator's only public port, a gateway that passes
Flower's Fleet API and nothing else to the loopback-only SuperLink (:mod:`fedsynth.deploy.gateway`),
and starts a complete federation on one machine's loopback (:mod:`fedsynth.deploy.local`) for
tests, benchmarks and rehearsals.
"""

from fedsynth.errors import UserError


class DeploymentError(UserError, RuntimeError):
    """A deployment process failed; the message says which, and where its log is."""
