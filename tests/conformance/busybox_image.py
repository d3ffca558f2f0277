#!/usr/bin/env python3
"""Make a minimal OCI image layout from the host busybox-static binary: usage busybox_image.py OUT_DIR"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

out = sys.argv[1]
os.makedirs(f"{out}/blobs/sha256", exist_ok=True)
applets = subprocess.run(["/bin/busybox","--list"],capture_output=True,text=True).stdout.split()
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    def d(name, mode=0o755):
        ti = tarfile.TarInfo(name); ti.type = tarfile.DIRTYPE; ti.mode = mode; ti.mtime = 0; t.addfile(ti)
    for n in ["bin","etc","tmp","root","proc","sys","dev","usr","usr/bin","var"]:
        d(n, 0o1777 if n=="tmp" else 0o755)
    data = open("/bin/busybox","rb").read()
    ti = tarfile.TarInfo("bin/busybox"); ti.size=len(data); ti.mode=0o755; ti.mtime=0; t.addfile(ti, io.BytesIO(data))
    for a in applets:
        if a == "busybox": continue
        ti = tarfile.TarInfo("bin/"+a); ti.type=tarfile.SYMTYPE; ti.linkname="busybox"; ti.mtime=0; t.addfile(ti)
    for name, content in [("etc/passwd","root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),("etc/group","root:x:0:\nnogroup:x:65534:\n")]:
        b=content.encode(); ti=tarfile.TarInfo(name); ti.size=len(b); ti.mode=0o644; ti.mtime=0; t.addfile(ti, io.BytesIO(b))
raw = buf.getvalue()
diffid = "sha256:"+hashlib.sha256(raw).hexdigest()
gz = gzip.compress(raw, mtime=0)
def blob(b):
    h=hashlib.sha256(b).hexdigest(); open(f"{out}/blobs/sha256/{h}","wb").write(b); return "sha256:"+h
ld = blob(gz)
cfg = {"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[diffid]},"history":[{"created_by":"busybox-static rootfs"}]}
cb = json.dumps(cfg).encode(); cd = blob(cb)
man = {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":len(cb)},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":ld,"size":len(gz)}]}
mb = json.dumps(man).encode(); md = blob(mb)
idx = {"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":md,"size":len(mb),"annotations":{"org.opencontainers.image.ref.name":"latest"}, "platform":{"architecture":"amd64","os":"linux"}}]}
open(f"{out}/index.json","w").write(json.dumps(idx)); open(f"{out}/oci-layout","w").write('{"imageLayoutVersion":"1.0.0"}')
print(md)
