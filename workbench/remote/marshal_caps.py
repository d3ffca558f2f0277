"""BuildKit's LLB cap ids (solver/pb/caps.go) and the sets the daemons we talk to support."""

from __future__ import annotations

# Docker 20.10's embedded BuildKit v0.8 (research notes §1c): what it accepts in OpMetadata.caps.
V08_CAPS: frozenset[str] = frozenset("""
constraints exec.cgroup exec.meta.base exec.meta.network exec.meta.proxyenv exec.meta.security
exec.meta.security.devices.v1 exec.meta.setsdefaultpath exec.mount.bind exec.mount.bind.readwrite-nooutput
exec.mount.cache exec.mount.cache.sharing exec.mount.secret exec.mount.selector exec.mount.ssh exec.mount.tmpfs
file.base file.rm.wildcard meta.description meta.exportcache meta.ignorecache platform soruce.http.uidgid
source.buildop.llbfilename source.git source.git.fullurl source.git.httpauth source.git.keepgitdir
source.git.knownsshhosts source.git.mountsshsock source.http source.http.checksum source.http.perm source.image
source.image.resolvemode source.local source.local.excludepatterns source.local.followpaths
source.local.includepatterns source.local.sessionid source.local.sharedkeyhint source.local.unique
""".split())

# What v0.20 adds (BuildKit v0.10 and later). Not `exec.meta.removemountstubs.recursive`: caps.go names it, but
# a v0.20 daemon refuses it as unknown (llb sets the Meta field without the cap).
V020_ONLY: frozenset[str] = frozenset("""
mergeop diffop file.symlink.create file.copy.includeexcludepatterns file.copy.modestring
file.copy.alwaysreplaceexistingdestpaths file.rm.nofollowsymlink exec.secretenv exec.meta.ulimit
exec.meta.cgroup.parent exec.meta.cdi exec.mount.tmpfs.size
exec.mount.cache.content exec.validexitcode source.local.differ source.git.subdir source.image.layerlimit
source.ocilayout source.policy
""".split())

V020_CAPS: frozenset[str] = V08_CAPS | V020_ONLY

# Why a cap is needed, for the one-line refusal when the daemon lacks it.
CAP_FEATURES: dict[str, str] = {
    "exec.secretenv": "RUN --mount=type=secret,env=…",
    "exec.mount.tmpfs.size": "RUN --mount=type=tmpfs,size=…",
    "exec.meta.cdi": "RUN --device",
    "file.copy.includeexcludepatterns": "COPY --exclude / --parents",
    "file.copy.modestring": "a symbolic --chmod",
    "source.git.subdir": "a git source with a subdirectory",
    "mergeop": "COPY --link",
}
