"""``kq --version``: what a bug report needs to know about the installation.

The kq distributions installed (``kq-*``, and any other that registers a kq plugin) with their versions
and where an editable one lives, the driver types of the ``kq.drivers`` entry points with the
distribution of each, the other plugins from distributions other than kq-core and kq-cli, the optional
packages behind kq-core's extras, Python and the platform. Warnings name what is known to break kq: a
foreign ``kq`` distribution, and kq distributions of different releases.

Only this path imports :mod:`importlib.metadata`: a worker's start reads entry points without it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import platform
import re
import sys
from dataclasses import dataclass, field

from kq.cli.version import __version__

#: Entry-point groups of kq plugins, the drivers first.
DRIVER_GROUP = "kq.drivers"
PLUGIN_GROUPS = (DRIVER_GROUP, "kq.handlers", "kq.listeners", "kq.commands")
#: Distributions whose own plugins are kq's built-ins (not listed under "other plugins").
BUILT_IN = ("kq-core", "kq-cli")
#: The distributions released together from kq's repository, with one version (third-party ``kq-*``
#: distributions have versions of their own).
RELEASED_TOGETHER = (
    "kq-cli",
    "kq-contrib-xmlrpc",
    "kq-core",
    "kq-driver-rabbitmq",
    "kq-driver-sqs",
    "kq-driver-stomp",
)
#: Optional packages of kq-core's extras: (package, extra).
OPTIONAL = (
    ("requests", "kq-core[http]"),
    ("pytest", "kq-core[testing]"),
    ("prometheus-client", "kq-core[prometheus]"),
)

_NORMALIZE = re.compile(r"[-_.]+")


def _normalize(name: str) -> str:
    return _NORMALIZE.sub("-", name).lower()


@dataclass
class Installed:
    """One kq distribution: its version, the source folder of an editable install, its plugins."""

    name: str
    version: str
    editable: str | None = None
    plugins: list[tuple[str, str]] = field(default_factory=list)  # (group, name)


@dataclass(frozen=True)
class Plugin:
    """An entry point of a kq plugin group and the distribution that registers it."""

    group: str
    name: str
    distribution: str
    version: str


@dataclass(frozen=True)
class ExtraPackage:
    """A package behind one of kq-core's extras, and its version if installed."""

    package: str
    extra: str
    version: str | None


@dataclass
class Report:
    """Everything ``kq --version`` shows."""

    kq: str
    python: str
    executable: str
    platform: str
    distributions: list[Installed]
    drivers: list[Plugin]
    other_plugins: list[Plugin]
    optional: list[ExtraPackage]
    warnings: list[str]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return dataclasses.asdict(self)

    def render(self) -> str:
        """The text ``kq --version`` prints (its first line is the one older versions printed)."""
        lines = [
            f"kq, version {self.kq}",
            f"Python: {self.python} ({self.executable})",
            f"Platform: {self.platform}",
            "Distributions:",
        ]
        width = max((len(d.name) for d in self.distributions), default=0)
        for dist in self.distributions:
            where = f"  (editable: {dist.editable})" if dist.editable else ""
            lines.append(f"  {dist.name:<{width}}  {dist.version}{where}")
        lines.append(f"Drivers ({DRIVER_GROUP}):")
        width = max((len(d.name) for d in self.drivers), default=0)
        lines += [f"  {d.name:<{width}}  {d.distribution} {d.version}" for d in self.drivers]
        if not self.drivers:
            lines.append("  (none: reinstall kq-core)")
        if self.other_plugins:
            lines.append("Other plugins:")
            lines += [f"  {p.group} {p.name}  ({p.distribution} {p.version})" for p in self.other_plugins]
        lines.append("Optional packages:")
        width = max(len(o.package) for o in self.optional)
        lines += [
            f"  {o.package:<{width}}  {o.version or 'not installed'}  ({o.extra})" for o in self.optional
        ]
        lines += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(lines) + "\n"


def collect() -> Report:
    """Read the installation's facts (every distribution's metadata: some tens of milliseconds)."""
    found: dict[str, Installed] = {}
    foreign_kq: str | None = None
    for dist in importlib.metadata.distributions():
        key = _normalize(dist.metadata["Name"] or "")
        if not key or key in found:
            continue  # the first distribution of a name on sys.path is the one imported
        if key == "kq":
            foreign_kq = foreign_kq or dist.version
            continue
        registered = [(ep.group, ep.name) for ep in dist.entry_points if ep.group in PLUGIN_GROUPS]
        if key.startswith("kq-") or registered:
            found[key] = Installed(key, dist.version, _editable(dist), registered)
    distributions = sorted(found.values(), key=lambda d: d.name)
    plugins = sorted(
        (Plugin(group, name, d.name, d.version) for d in distributions for group, name in d.plugins),
        key=lambda p: (PLUGIN_GROUPS.index(p.group), p.name, p.distribution),
    )
    warnings = []
    if foreign_kq is not None:
        warnings.append(
            f"the distribution kq {foreign_kq} is installed: it is not kq's (kq's are kq-core, kq-cli, "
            "kq-driver-*) and its kq/__init__.py hides the kq namespace; run `pip uninstall kq`"
        )
    releases = sorted({d.version for d in distributions if d.name in RELEASED_TOGETHER})
    if len(releases) > 1:
        warnings.append(
            f"the kq distributions come from different releases ({', '.join(releases)}); "
            "install matching versions"
        )
    return Report(
        kq=__version__,
        python=f"{platform.python_implementation()} {platform.python_version()}",
        executable=sys.executable,
        platform=platform.platform(),
        distributions=distributions,
        drivers=[p for p in plugins if p.group == DRIVER_GROUP],
        other_plugins=[p for p in plugins if p.group != DRIVER_GROUP and p.distribution not in BUILT_IN],
        optional=[ExtraPackage(package, extra, _version(package)) for package, extra in OPTIONAL],
        warnings=warnings,
    )


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _editable(dist: importlib.metadata.Distribution) -> str | None:
    """The source folder of an editable install (PEP 610's direct_url.json), else ``None``."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        direct = json.loads(text)
    except ValueError:
        return None
    if not isinstance(direct, dict) or not direct.get("dir_info", {}).get("editable"):
        return None
    url = str(direct.get("url", ""))
    return url.removeprefix("file://") or None
