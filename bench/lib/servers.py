"""The servers under test, as specs that say how to start them: ours (the
nix-serve binary, one spec per store backend and signing setting), the
static-file limit (nginx over a `nix copy --to file://` cache) and, when
given, harmonia (the fastest peer)."""

import json
import os
import time

import client
import procs


class StartError(Exception):
    pass


class Nginx:
    """Debian's nginx serving the file:// cache, tuned as one would for a cache:
    sendfile, keep-alive without a per-connection request cap, no access log."""

    signs = True  # the cache was written with the same key
    serves_idle_timeout = False

    def __init__(self, name, cache_dir, workdir):
        self.name = name
        self.cache_dir = cache_dir
        self.prefix = os.path.join(workdir, name)
        for sub in ("tmp", "logs"):
            os.makedirs(os.path.join(self.prefix, sub), exist_ok=True)

    def for_many_connections(self):
        """Itself: keepalive_timeout (75 s) outlasts the misbehave scenario, and
        worker_connections (4,096 per worker) take its 1,600 connections."""
        return self

    def command(self, port, activated=False, idle_timeout=None):
        conf = os.path.join(self.prefix, f"nginx-{port}.conf")
        with open(conf, "w") as f:
            f.write(self._conf(port))
        argv = ["nginx", "-c", conf, "-p", self.prefix, "-g", "daemon off;"]
        env = dict(os.environ)
        if activated:
            # nginx's own hand-over: it adopts listening sockets named in $NGINX
            # (its binary-upgrade mechanism) when they match a `listen`.
            env["NGINX"] = "3;"
        return argv, env

    def _conf(self, port):
        p = self.prefix
        return f"""
user root;
worker_processes auto;
pid {p}/nginx-{port}.pid;
error_log {p}/logs/error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 75s;
  keepalive_requests 1000000000;
  client_body_temp_path {p}/tmp/body;
  proxy_temp_path {p}/tmp/proxy;
  fastcgi_temp_path {p}/tmp/fastcgi;
  uwsgi_temp_path {p}/tmp/uwsgi;
  scgi_temp_path {p}/tmp/scgi;
  types {{
    text/x-nix-narinfo narinfo;
    application/x-nix-archive nar;
    text/x-nix-cache-info nix-cache-info;
  }}
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port};
    root {self.cache_dir};
  }}
}}
"""


class Floor:
    """bench/lib/floor.rs: a fixed 200 for every connection, socket activated
    only; the cold-start floor."""

    serves_idle_timeout = False

    def __init__(self, binary):
        self.name = "floor"
        self.binary = binary

    def command(self, port, activated=False, idle_timeout=None):
        return [self.binary], dict(os.environ)


class Ours:
    """Our nix-serve binary with one store backend, signing on or off."""

    serves_idle_timeout = True

    def __init__(self, name, binary, store, key=None, env=None, args=()):
        self.name = name
        self.binary = binary
        self.store = store
        self.key = key
        self.signs = key is not None
        self.env = env or {}
        self.args = list(args)

    def for_many_connections(self):
        """The same server with a keep-alive timeout (60 s) that outlasts the
        misbehave scenario, as nginx's does, so its idle connections stay idle
        instead of being closed and reopened (which would be another scenario)."""
        return Ours(self.name, self.binary, self.store, self.key, self.env,
                    self.args + ["--keepalive-timeout", "60"])

    def command(self, port, activated=False, idle_timeout=None):
        argv = [self.binary]
        if not activated:
            argv += ["--listen", f"127.0.0.1:{port}"]
        argv += ["--store", self.store]
        if self.key:
            argv += ["--sign-key-file", self.key]
        if idle_timeout:
            argv += ["--idle-timeout", idle_timeout]
        argv += self.args
        env = dict(os.environ)
        env.pop("NIX_SECRET_KEY_FILE", None)  # signing is what `key` says, nothing else
        env.update(self.env)
        return argv, env


class Harmonia:
    """harmonia-cache (nix-community/harmonia) on the same store and key as
    ours, configured as its README says: a TOML file named by CONFIG_FILE.
    It reads the store's db.sqlite itself (never the daemon), so a chroot
    store is `root`'s nix/store and nix/var/nix/db/db.sqlite. Its defaults
    otherwise: its own count of actix workers (4 on a 2-core machine), zstd
    only for clients that ask (wrk and curl do not). No socket activation
    and no idle exit."""

    signs = True
    serves_idle_timeout = False

    def __init__(self, name, binary, key, workdir, root=None):
        self.name = name
        self.binary = binary
        self.key = key
        self.workdir = workdir
        self.root = root

    def for_many_connections(self):
        """Itself: harmonia has no keep-alive setting; actix's default (5 s)
        closes the misbehave scenario's idle connections, which the
        misbehaving clients then open again (a note says how many)."""
        return self

    def command(self, port, activated=False, idle_timeout=None):
        if activated:
            raise ValueError("harmonia is not started by socket activation here")
        conf = os.path.join(self.workdir, f"{self.name}-{port}.toml")
        lines = [f'bind = "127.0.0.1:{port}"', f"sign_key_paths = [{toml_string(self.key)}]"]
        if self.root:
            lines += [f"real_nix_store = {toml_string(os.path.join(self.root, 'nix/store'))}",
                      f"nix_db_path = {toml_string(os.path.join(self.root, 'nix/var/nix/db/db.sqlite'))}"]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        env = dict(os.environ)
        env["CONFIG_FILE"] = conf
        return [self.binary], env


def toml_string(s):
    """A TOML basic string (JSON's escapes are TOML's for what paths hold)."""
    return json.dumps(s)


class Running:
    """A server started on its own port (no socket activation)."""

    def __init__(self, spec, logdir, tag=""):
        self.spec = spec
        self.port = procs.free_port()
        self.log = os.path.join(logdir, f"{spec.name}{tag}.log")
        argv, env = spec.command(self.port)
        self.pid = procs.spawn(argv, env, log=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, _ = client.get(self.port, "/nix-cache-info", timeout=5)
                if status == 200:
                    return
                raise StartError(f"{spec.name}: /nix-cache-info answered {status}")
            except OSError:
                pass
            if not procs.alive(self.pid):
                raise StartError(f"{spec.name} exited at start:\n{procs.tail(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise StartError(f"{spec.name} did not answer within 30 s:\n{procs.tail(self.log)}")
            time.sleep(0.02)

    def members(self):
        return procs.group(self.pid)

    def rss_kib(self):
        return procs.rss_kib(self.members())

    def stop(self):
        procs.stop(self.pid)

