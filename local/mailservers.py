"""Private Dovecot 2.3 and Postfix 3.7 instances on loopback, for the local stack and the integration tests.

Everything an instance needs lives under one root folder; no system configuration is read for
writing or touched (Debian's binaries and their read-only defaults in ``/usr`` are used as they are):

    ROOT/
      mailboxes.json             the mailboxes (source of truth for the two files below)
      ports.json                 the ports last started with (reused when ``ports`` is not given)
      tls/ca.pem                 the CA a client must trust (``MailServers.ca_file``)
      tls/server.pem, server.key the servers' certificate (SAN IP:127.0.0.1, DNS:localhost, DNS:mail.DOMAIN)
      dovecot/dovecot.conf       run as ``dovecot -F -c ROOT/dovecot/dovecot.conf``
      dovecot/users              passwd-file passdb/userdb
      dovecot/dovecot-oauth2.conf.ext  oauth2 passdb (only with ``oauth2_introspection_url``: XOAUTH2/OAUTHBEARER)
      dovecot/run/               base_dir: master.pid, ``lmtp`` and ``auth-postfix`` sockets
      dovecot/state/             state_dir
      postfix/main.cf, master.cf run as ``/usr/lib/postfix/sbin/master -c ROOT/postfix -d``
      postfix/virtual_mailboxes  texthash virtual_mailbox_maps
      postfix/recipient_access   texthash: known mailboxes OK, anything else @DOMAIN 550 at RCPT
      postfix/spool/             queue_directory (pid/master.pid inside)
      postfix/data/              data_directory
      mail/DOMAIN/LOCAL/Maildir  the maildirs, owned by uid/gid 5000
      log/dovecot.log, postfix.log, *.stderr

``postfix -c ROOT/postfix reload|flush`` and ``doveadm -c ROOT/dovecot/dovecot.conf ...`` work on it.

Traps worth knowing (measured on Debian 12 with Postfix 3.7.11 and Dovecot 2.3.19):

- Every folder on the root's path must be searchable by others (0755): pytest's ``tmp_path`` is
  0700, so Postfix won't start and Dovecot logins fail. Use ``tempfile.mkdtemp(dir="/tmp")`` and
  ``chmod 0o755``. The constructor checks this and raises ``ValueError``.
- Dovecot's unix sockets live under the root, so the root path must stay short (sun_path is 108 bytes).
- Failed logins: Dovecot penalises the client IP after a failed login (the next login from that IP
  waits seconds). Negative tests should connect from their own loopback address, e.g.
  ``smtplib.SMTP(host, port, source_address=("127.0.0.2", 0))``; the servers listen on 127.0.0.1
  only but accept clients from any 127/8 address. ``auth_failure_delay`` is 0 here, so the failure
  itself answers at once.
- Mail is delivered asynchronously (Postfix queue, then LMTP into Dovecot): poll for it, e.g. with
  ``message_count()``.
"""

import base64
import contextlib
import hashlib
import json
import math
import os
import poplib
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

MAIL_UID = 5000
MAIL_GID = 5000
MESSAGE_SIZE_LIMIT = 50 * 1024 * 1024
DOVECOT_BINARY = "/usr/sbin/dovecot"
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
DOVECOT_DH_FILE = Path("/usr/share/dovecot/dh.pem")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_BACKDATE_SECONDS = 60  # Postfix re-reads ("cools down") config files written in the last ~2 s.
_POSTFIX_QUEUES = (
    *("active", "bounce", "corrupt", "defer", "deferred", "flush"),
    *("hold", "incoming", "private", "saved", "trace"),
)
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_UNSAFE_LOCAL_CHARS = re.compile(r"[/:%]")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9/._+-]+$")


@dataclass(frozen=True)
class Mailbox:
    """A mailbox; the login user name is the full address."""

    address: str
    password: str


@dataclass
class MailServerPorts:
    """The loopback ports of one instance."""

    pop3: int  # POP3 offering STLS
    pop3s: int  # POP3 over implicit TLS
    imap: int  # IMAP offering STARTTLS
    smtp: int  # SMTP submission offering STARTTLS and AUTH PLAIN/LOGIN (also before STARTTLS)
    smtps: int  # SMTP over implicit TLS (wrapper mode), AUTH too

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> "MailServerPorts":
        """Ports free on ``host`` right now (all five distinct)."""
        with contextlib.ExitStack() as stack:
            ports: list[int] = []
            for _ in range(5):
                sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                sock.bind((host, 0))
                ports.append(sock.getsockname()[1])
        return cls(*ports)

    def as_list(self) -> list[int]:
        return [self.pop3, self.pop3s, self.imap, self.smtp, self.smtps]


@dataclass
class _Proc:
    name: str
    pid: int
    popen: subprocess.Popen[bytes] | None = field(default=None)


class MailServers:
    """A private Dovecot (POP3, IMAP, LMTP, SASL) and Postfix (SMTP) pair under ``root``.

    Mail to any mailbox @``domain`` is accepted (with or without AUTH) and delivered over LMTP into
    Dovecot; unknown local recipients get 550 at RCPT. Relaying elsewhere needs AUTH and is then
    accepted but bounced locally: nothing ever leaves the machine.
    """

    def __init__(
        self,
        root: Path,
        *,
        domain: str = "example.test",
        ports: MailServerPorts | None = None,
        host: str = "127.0.0.1",
        oauth2_introspection_url: str | None = None,
    ) -> None:
        """With `oauth2_introspection_url` (an RFC 7662 endpoint on loopback, e.g. local/oauth2_server.py)
        Dovecot, and Postfix's SASL through it, also accept XOAUTH2 and OAUTHBEARER logins of any
        mailbox with a bearer token that endpoint calls active for it; passwords keep working."""
        self.oauth2_introspection_url = oauth2_introspection_url
        self.root = Path(root).absolute()
        self.domain = domain.lower()
        self.host = host
        if not _SAFE_PATH.match(str(self.root)):
            raise ValueError(f"root {self.root} must not contain spaces or special characters")
        if len(str(self.root)) > 64:
            raise ValueError(f"root {self.root} is too long for Dovecot's unix sockets (max 64 chars)")
        if not re.match(r"^[a-z0-9.-]+$", self.domain):
            raise ValueError(f"bad domain {domain!r}")
        self._check_parents()
        saved = self._saved_ports()
        self.ports = ports or saved or MailServerPorts.free(host)
        self.tls_dir = self.root / "tls"
        self.ca_file = self.tls_dir / "ca.pem"
        self.cert_file = self.tls_dir / "server.pem"
        self.key_file = self.tls_dir / "server.key"
        self.dovecot_dir = self.root / "dovecot"
        self.dovecot_conf = self.dovecot_dir / "dovecot.conf"
        self.dovecot_users = self.dovecot_dir / "users"
        self.dovecot_oauth2_conf = self.dovecot_dir / "dovecot-oauth2.conf.ext"
        self.dovecot_run = self.dovecot_dir / "run"
        self.lmtp_socket = self.dovecot_run / "lmtp"
        self.auth_socket = self.dovecot_run / "auth-postfix"
        self.postfix_dir = self.root / "postfix"
        self.postfix_spool = self.postfix_dir / "spool"
        self.postfix_data = self.postfix_dir / "data"
        self.virtual_map = self.postfix_dir / "virtual_mailboxes"
        self.recipient_access = self.postfix_dir / "recipient_access"
        self.mail_dir = self.root / "mail"
        self.log_dir = self.root / "log"
        self.dovecot_log = self.log_dir / "dovecot.log"
        self.postfix_log = self.log_dir / "postfix.log"
        self._procs: dict[str, _Proc] = {}
        # Mailboxes whose RCPT gets another answer than OK for now (see ``answer_rcpt``).
        self._rcpt_answers: dict[str, str] = {}

    # ---------------------------------------------------------------- context manager
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- public API
    def start(self) -> None:
        """Write the configuration, start both servers and wait until they serve (banners and AUTH)."""
        if self.is_running():
            if self._saved_ports() == self.ports:
                return
            self.stop()
        self._kill_strays()
        started = time.monotonic()
        self._prepare()
        self._spawn("dovecot", [DOVECOT_BINARY, "-F", "-c", str(self.dovecot_conf)])
        self._spawn("postfix", [POSTFIX_MASTER, "-c", str(self.postfix_dir), "-d"])
        try:
            self._wait_ready(started + START_TIMEOUT)
        except Exception as error:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"mail servers under {self.root} did not start: {error}\n{tail}") from error
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop both servers (their whole process groups) and wait until they are gone."""
        procs = list(self._procs.values())
        known = {p.pid for p in procs}
        for name, pid in self._pid_file_pids().items():
            if pid not in known:
                procs.append(_Proc(name, pid))
        # SIGTERM to the whole group: a Dovecot master alone takes ~1 s and leaves auth/log/anvil behind.
        for proc in procs:
            self._signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in [proc for proc in procs if not self._wait_group_gone(proc, deadline)]:
            self._signal_group(proc.pid, signal.SIGKILL)
        for proc in procs:
            if not self._wait_group_gone(proc, time.monotonic() + 5):
                raise RuntimeError(f"{proc.name} (process group {proc.pid}) did not stop")
        self._procs.clear()

    def is_running(self) -> bool:
        """True when both master processes of this root are alive (started by any process)."""
        names = {name for name, proc in self._procs.items() if self._alive(proc)}
        names |= set(self._pid_file_pids())
        return names >= {"dovecot", "postfix"}

    def pids(self) -> list[int]:
        """The pids of the Dovecot and Postfix master processes (each leads its own process group)."""
        found = {name: proc.pid for name, proc in self._procs.items() if self._alive(proc)}
        for name, pid in self._pid_file_pids().items():
            found.setdefault(name, pid)
        return [found[name] for name in ("dovecot", "postfix") if name in found]

    def add_mailbox(self, mailbox: Mailbox) -> None:
        """Add (or change the password of) a mailbox, persisted under the root.

        Before ``start()`` this only writes files. While running it takes effect before returning,
        which costs up to ~1 s (Dovecot stats its passwd-file at most once per clock second), so add
        many mailboxes with one ``add_mailboxes()`` call, or before starting.
        """
        self.add_mailboxes([mailbox])

    def add_mailboxes(self, mailboxes: Iterable[Mailbox]) -> None:
        """Add several mailboxes at once (see ``add_mailbox``)."""
        table = self._load_mailboxes()
        added = []
        for mailbox in mailboxes:
            local, domain = self._split(mailbox.address)
            if "\n" in mailbox.password or "\0" in mailbox.password:
                raise ValueError("password must not contain newlines or NUL")
            table[f"{local}@{domain}"] = mailbox.password
            added.append(Mailbox(f"{local}@{domain}", mailbox.password))
        if not added or (table == self._load_mailboxes() and self.dovecot_users.exists()):
            return  # nothing changed
        self._write(self.root / "mailboxes.json", json.dumps(table, indent=2) + "\n", 0o600)
        self._write_mailbox_tables(table)
        written = time.time()
        if not self.is_running():
            return
        self._reload_postfix()
        # Dovecot re-stats the passwd-file at most once per second of its clock: a lookup still in
        # the second of the write may see the old file, and a failed lookup costs a penalty of
        # seconds. So wait for the next second before the first (then successful) lookup.
        time.sleep(max(0.0, math.floor(written) + 1.02 - time.time()))
        deadline = time.monotonic() + 15
        for mailbox in added:
            self._wait_auth(mailbox, deadline)
            self._wait_rcpt_accepted(mailbox.address, deadline)

    def answer_rcpt(self, address: str, reply: str | None) -> None:
        """Make Postfix answer ``RCPT TO:<address>`` with ``reply`` (an access(5) action such as
        ``450 4.2.1 Mailbox busy, try later``) until called again with None (back to OK). Takes
        effect before returning: Postfix reloads, then a probe sees the new answer."""
        local, domain = self._split(address)
        address = f"{local}@{domain}"
        if reply is None:
            self._rcpt_answers.pop(address, None)
        else:
            self._rcpt_answers[address] = reply
        self._write_mailbox_tables(self._load_mailboxes())
        if not self.is_running():
            return
        self._reload_postfix()
        expected = int(reply.split()[0]) if reply else 250
        self._retry(lambda: self._probe_rcpt(address, expected), time.monotonic() + 15)

    def mailboxes(self) -> list[Mailbox]:
        return [Mailbox(address, password) for address, password in self._load_mailboxes().items()]

    def maildir(self, address: str) -> Path:
        local, domain = self._split(address)
        return self.mail_dir / domain / local / "Maildir"

    def message_count(self, address: str) -> int:
        """Messages in the mailbox's INBOX, counted on disk (cheap; no login, no failure penalty)."""
        maildir = self.maildir(address)
        return sum(1 for sub in ("new", "cur") if (maildir / sub).is_dir() for _ in (maildir / sub).iterdir())

    def remove_all_mail(self, address: str) -> None:
        """Empty the mailbox (all folders); UIDs keep growing, so old POP3 UIDLs are never reused."""
        maildir = self.maildir(address)
        if not maildir.is_dir():
            return
        folders = [maildir] + [p for p in maildir.iterdir() if p.is_dir() and p.name.startswith(".")]
        for folder in folders:
            for sub in ("new", "cur", "tmp"):
                if (folder / sub).is_dir():
                    for item in (folder / sub).iterdir():
                        with contextlib.suppress(FileNotFoundError):
                            item.unlink()
            # Drop the index caches so that no session sees the old messages; dovecot-uidlist stays.
            for index in folder.glob("dovecot.index*"):
                with contextlib.suppress(FileNotFoundError):
                    index.unlink()
        for index in maildir.glob("dovecot.list.index*"):
            with contextlib.suppress(FileNotFoundError):
                index.unlink()

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of each log (and of non-empty stderr captures), for failure messages."""
        parts = []
        for path in sorted(self.log_dir.glob("*")) if self.log_dir.is_dir() else []:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if not text.strip() and path.suffix == ".stderr":
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"==> {path} <==\n{tail}")
        return "\n".join(parts)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the servers' certificate (check_hostname on)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    # ---------------------------------------------------------------- preparing the root
    def _check_parents(self) -> None:
        for parent in [self.root, *self.root.parents]:
            if parent.exists() and not parent.stat().st_mode & 0o001:
                raise ValueError(
                    f"{parent} is not searchable by others (mode {parent.stat().st_mode & 0o777:o});"
                    " every folder on the path of the mail servers' root must be 0755"
                )

    def _saved_ports(self) -> MailServerPorts | None:
        try:
            return MailServerPorts(**json.loads((self.root / "ports.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _split(self, address: str) -> tuple[str, str]:
        local, sep, domain = address.strip().lower().rpartition("@")
        if not sep or not _LOCAL_PART.match(local) or _UNSAFE_LOCAL_CHARS.search(local):
            raise ValueError(f"bad mailbox address {address!r}")
        if domain != self.domain:
            raise ValueError(f"{address!r} is not in this instance's domain {self.domain!r}")
        return local, domain

    def _load_mailboxes(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / "mailboxes.json").read_text())
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def _prepare(self) -> None:
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self._check_parents()
        for folder in (self.tls_dir, self.dovecot_dir, self.postfix_dir, self.log_dir):
            folder.mkdir(mode=0o755, exist_ok=True)
        self._ensure_certificate()
        self._write(self.root / "ports.json", json.dumps(asdict(self.ports)) + "\n", 0o644)
        # Dovecot
        for folder in (self.dovecot_run, self.dovecot_dir / "state"):
            folder.mkdir(mode=0o755, exist_ok=True)
        self.mail_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.mail_dir, MAIL_UID, MAIL_GID)
        self._write(self.dovecot_conf, self._dovecot_config(), 0o644)
        if self.oauth2_introspection_url:
            self._write(self.dovecot_oauth2_conf, self._dovecot_oauth2_config(), 0o644)
        # Postfix
        self._make_postfix_dirs()
        self._write(self.postfix_dir / "main.cf", self._postfix_main_cf(), 0o644)
        self._write(self.postfix_dir / "master.cf", self._postfix_master_cf(), 0o644)
        self._write_mailbox_tables(self._load_mailboxes())
        for name in ("dovecot.stderr", "postfix.stderr"):
            (self.log_dir / name).write_bytes(b"")

    def _write_mailbox_tables(self, mailboxes: dict[str, str]) -> None:
        self.dovecot_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.postfix_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        users = []
        for address, password in sorted(mailboxes.items()):
            local, domain = address.split("@")
            secret = base64.b64encode(password.encode()).decode()
            home = self.mail_dir / domain / local
            users.append(f"{address}:{{PLAIN.b64}}{secret}:{MAIL_UID}:{MAIL_GID}::{home}::\n")
        # Dovecot re-reads the passwd-file when its mtime (seconds) or size changes: force a new mtime.
        old_mtime = int(self.dovecot_users.stat().st_mtime) if self.dovecot_users.exists() else 0
        if self._write(self.dovecot_users, "".join(users), 0o640, backdate=False):
            new_mtime = max(int(time.time()), old_mtime + 1)
            os.utime(self.dovecot_users, (new_mtime, new_mtime))
        with contextlib.suppress(KeyError):
            shutil.chown(self.dovecot_users, "root", "dovecot")
        table = "".join(f"{address} OK\n" for address in sorted(mailboxes))
        self._write(self.virtual_map, table, 0o644)
        answers = "".join(
            f"{address} {self._rcpt_answers.get(address, 'OK')}\n" for address in sorted(mailboxes)
        )
        unknown = f"{self.domain} 550 5.1.1 User unknown in virtual mailbox table\n"
        self._write(self.recipient_access, answers + unknown, 0o644)

    @staticmethod
    def _write(path: Path, text: str, mode: int, *, backdate: bool = True) -> bool:
        """Write ``text`` atomically unless unchanged; returns whether it changed."""
        try:
            if path.read_text() == text:
                path.chmod(mode)
                return False
        except FileNotFoundError:
            pass
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(mode)
        if backdate:
            past = time.time() - _BACKDATE_SECONDS
            os.utime(tmp, (past, past))
        tmp.replace(path)
        return True

    def _ensure_certificate(self) -> None:
        if self.ca_file.exists() and self.cert_file.exists() and self.key_file.exists():
            return
        names = ["IP:127.0.0.1", "DNS:localhost", f"DNS:mail.{self.domain}"]
        if self.host not in ("127.0.0.1", "localhost"):
            names.append(f"IP:{self.host}" if re.match(r"^[0-9.]+$", self.host) else f"DNS:{self.host}")
        config = self.tls_dir / "openssl.cnf"
        config.write_text(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
            "[ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
            "subjectKeyIdentifier = hash\n"
            "[server]\nbasicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n"
            f"subjectAltName = {', '.join(names)}\n"
            "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n"
        )
        ca_key = self.tls_dir / "ca.key"
        csr = self.tls_dir / "server.csr"

        def openssl(*args: str) -> None:
            done = subprocess.run(
                ["openssl", *args],
                capture_output=True,
                text=True,
                env={**os.environ, "OPENSSL_CONF": str(config)},
            )
            if done.returncode:
                raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")

        for key in (ca_key, self.key_file):
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
            key.chmod(0o600)
        openssl(
            "req", "-x509", "-new", "-config", str(config), "-extensions", "ca", "-key", str(ca_key),
            "-subj", f"/CN=Local mail servers CA {self._instance_id()}", "-days", "3650",
            "-out", str(self.ca_file),
        )  # fmt: skip
        openssl(
            "req", "-new", "-config", str(config), "-key", str(self.key_file), "-subj", "/CN=localhost",
            "-out", str(csr),
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca_file), "-CAkey", str(ca_key),
            "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "825",
            "-extfile", str(config), "-extensions", "server", "-out", str(self.cert_file),
        )  # fmt: skip
        csr.unlink()

    def _make_postfix_dirs(self) -> None:
        for folder, owner, group, mode in [
            (self.postfix_spool, "root", "root", 0o755),
            (self.postfix_spool / "pid", "root", "root", 0o755),
            *[(self.postfix_spool / name, "postfix", "root", 0o700) for name in _POSTFIX_QUEUES],
            (self.postfix_spool / "maildrop", "postfix", "postdrop", 0o730),
            (self.postfix_spool / "public", "postfix", "postdrop", 0o710),
            (self.postfix_data, "postfix", "root", 0o700),
        ]:
            folder.mkdir(exist_ok=True)
            shutil.chown(folder, owner, group)
            folder.chmod(mode)

    def _instance_id(self) -> str:
        return hashlib.sha256(str(self.root).encode()).hexdigest()[:8]

    def _dovecot_config(self) -> str:
        instance = f"mailservers-{self._instance_id()}"
        dh = f"ssl_dh = <{DOVECOT_DH_FILE}\n" if DOVECOT_DH_FILE.exists() else ""
        p = self.ports
        return f"""# Written by local/mailservers.py; rewritten on every start.
instance_name = {instance}
base_dir = {self.dovecot_run}
state_dir = {self.dovecot_dir / "state"}
log_path = {self.dovecot_log}
hostname = mail.{self.domain}
postmaster_address = postmaster@{self.domain}
protocols = pop3 imap lmtp
listen = {self.host}
shutdown_clients = yes
verbose_proctitle = yes

ssl = yes
ssl_cert = <{self.cert_file}
ssl_key = <{self.key_file}
{dh}
auth_mechanisms = plain login{" xoauth2 oauthbearer" if self.oauth2_introspection_url else ""}
disable_plaintext_auth = no
auth_failure_delay = 0
auth_cache_size = 0
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = username_format=%Lu {self.dovecot_users}
}}
{self._dovecot_oauth2_passdb()}userdb {{
  driver = passwd-file
  args = username_format=%Lu {self.dovecot_users}
}}

mail_location = maildir:~/Maildir
first_valid_uid = {MAIL_UID}
last_valid_uid = {MAIL_UID}
first_valid_gid = {MAIL_GID}
last_valid_gid = {MAIL_GID}
mail_max_userip_connections = 100
pop3_uidl_format = %08Xu%08Xv
lmtp_save_to_detail_mailbox = no

service pop3-login {{
  inet_listener pop3 {{
    address = {self.host}
    port = {p.pop3}
  }}
  inet_listener pop3s {{
    address = {self.host}
    port = {p.pop3s}
    ssl = yes
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {p.imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""

    def _dovecot_oauth2_passdb(self) -> str:
        if not self.oauth2_introspection_url:
            return ""
        return f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {self.dovecot_oauth2_conf}
}}
"""

    def _dovecot_oauth2_config(self) -> str:
        # Introspection on every login (auth_cache_size = 0), so a revoked token fails at once.
        # Dovecot 2.3 could also check the JWTs itself (introspection_mode = local with
        # local_validation_key_dict), but then it would never learn of a revocation.
        return f"""# Written by local/mailservers.py; rewritten on every start.
introspection_mode = post
introspection_url = {self.oauth2_introspection_url}
username_attribute = username
active_attribute = active
active_value = true
force_introspection = yes
timeout_msecs = 5000
"""

    def _postfix_main_cf(self) -> str:
        p = self.ports
        return f"""# Written by local/mailservers.py; rewritten on every start.
compatibility_level = 3.6
queue_directory = {self.postfix_spool}
data_directory = {self.postfix_data}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self.postfix_log}
maillog_file_prefixes = {self.log_dir}
inet_interfaces = {self.host}
inet_protocols = ipv4
myhostname = mail.{self.domain}
mydomain = {self.domain}
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.1/32
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
readme_directory = no

# Nothing leaves this machine.
default_transport = error:5.7.1 outbound mail is disabled on this local instance
relay_transport = error:5.7.1 outbound mail is disabled on this local instance
local_transport = error:5.1.1 local delivery is disabled on this local instance

virtual_mailbox_domains = {self.domain}
virtual_mailbox_maps = texthash:{self.virtual_map}
virtual_transport = lmtp:unix:{self.lmtp_socket}
message_size_limit = {MESSAGE_SIZE_LIMIT}
mailbox_size_limit = 0
virtual_mailbox_limit = 0

# No DNS, no delays.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_error_sleep_time = 0
in_flow_delay = 0
queue_run_delay = 10s
minimal_backoff_time = 10s
maximal_backoff_time = 60s
delay_warning_time = 0

smtpd_banner = $myhostname ESMTP
smtpd_tls_cert_file = {self.cert_file}
smtpd_tls_key_file = {self.key_file}
smtpd_tls_security_level = may
smtpd_tls_auth_only = no
smtpd_tls_loglevel = 0
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {self.auth_socket}
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
# Unknown mailboxes @domain get 550 at RCPT from this table, not from reject_unlisted_recipient: that
# one also refuses every recipient routed to the error transport, so authenticated relaying (which
# must be accepted, then bounced locally) would be refused at RCPT too.
smtpd_reject_unlisted_recipient = no
smtpd_recipient_restrictions = check_recipient_access texthash:{self.recipient_access}
# Ports: smtp {p.smtp} (STARTTLS), smtps {p.smtps} (implicit TLS), see master.cf.
"""

    def _postfix_master_cf(self) -> str:
        rows = [
            f"{self.host}:{self.ports.smtp} inet n - n - - smtpd",
            f"{self.host}:{self.ports.smtps} inet n - n - - smtpd",
            "  -o smtpd_tls_wrappermode=yes",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "# Written by local/mailservers.py; rewritten on every start.\n" + "\n".join(rows) + "\n"

    # ---------------------------------------------------------------- processes
    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.log_dir / f"{name}.stderr", "ab") as err:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        self._procs[name] = _Proc(name, popen.pid, popen)

    def _pid_file_pids(self) -> dict[str, int]:
        """Live master pids recorded in this root's pid files (servers started by any process)."""
        found: dict[str, int] = {}
        for name, pid_file, marker in (
            ("dovecot", self.dovecot_run / "master.pid", str(self.dovecot_conf)),
            ("postfix", self.postfix_spool / "pid" / "master.pid", str(self.postfix_dir)),
        ):
            try:
                pid = int(pid_file.read_text().split()[0])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError, IndexError):
                continue
            if marker in cmdline and _state(pid) not in ("Z", None):
                found[name] = pid
        return found

    def _kill_strays(self) -> None:
        """Stop leftovers of this root (e.g. from a crashed test run) so the ports and pid files free up."""
        if self._pid_file_pids() or self._procs:
            self.stop()

    @staticmethod
    def _alive(proc: _Proc) -> bool:
        if proc.popen is not None:
            return proc.popen.poll() is None
        return _state(proc.pid) not in ("Z", None)

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    @staticmethod
    def _wait_group_gone(proc: _Proc, deadline: float) -> bool:
        while True:
            if proc.popen is not None:
                proc.popen.poll()
            if not process_group(proc.pid):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def _reload_postfix(self) -> None:
        """Like ``postfix -c DIR reload``: the texthash tables are read only when a process starts."""
        pids = self.pids()
        if len(pids) == 2:
            os.kill(pids[1], signal.SIGHUP)

    # ---------------------------------------------------------------- readiness
    def _wait_ready(self, deadline: float) -> None:
        self._retry(self._check_dovecot_auth, deadline)
        self._retry(self._check_lmtp, deadline)
        self._retry(self._check_pop3, deadline)
        self._retry(self._check_imap, deadline)
        self._retry(self._check_smtp, deadline)
        mailboxes = self.mailboxes()
        if mailboxes:
            self._wait_auth(mailboxes[0], deadline)

    def _retry(self, check: Callable[[], None], deadline: float) -> None:
        while True:
            for name, proc in self._procs.items():
                if not self._alive(proc):
                    raise RuntimeError(f"{name} exited with {proc.popen.returncode if proc.popen else '?'}")
            try:
                check()
                return
            except (OSError, EOFError, ssl.SSLError, smtplib.SMTPException, poplib.error_proto, _NotReady):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.03)

    def _auth_conversation(self, mailbox: Mailbox | None) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.auth_socket))
            sock.sendall(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
            reader = sock.makefile("rb")
            while (line := reader.readline()) != b"DONE\n":
                if not line:
                    raise _NotReady("auth socket closed")
            if mailbox is None:
                return
            response = base64.b64encode(f"\0{mailbox.address}\0{mailbox.password}".encode()).decode()
            sock.sendall(f"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tresp={response}\n".encode())
            answer = reader.readline().decode()
            if not answer.startswith("OK\t1"):
                raise _NotReady(f"auth for {mailbox.address} answered {answer.strip()!r}")

    def _check_dovecot_auth(self) -> None:
        self._auth_conversation(None)

    def _wait_auth(self, mailbox: Mailbox, deadline: float) -> None:
        self._retry(lambda: self._auth_conversation(mailbox), deadline)

    def _check_lmtp(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.lmtp_socket))
            if not sock.makefile("rb").readline().startswith(b"220 "):
                raise _NotReady("no LMTP banner")
            sock.sendall(b"QUIT\r\n")

    def _check_pop3(self) -> None:
        poplib.POP3(self.host, self.ports.pop3, timeout=5).quit()
        poplib.POP3_SSL(self.host, self.ports.pop3s, timeout=5, context=self.ssl_context()).quit()

    def _check_imap(self) -> None:
        with socket.create_connection((self.host, self.ports.imap), timeout=5) as sock:
            if not sock.makefile("rb").readline().startswith(b"* OK"):
                raise _NotReady("no IMAP banner")
            sock.sendall(b"a LOGOUT\r\n")

    def _check_smtp(self) -> None:
        with smtplib.SMTP(self.host, self.ports.smtp, timeout=5) as smtp:
            smtp.ehlo()
            if not (smtp.has_extn("auth") and smtp.has_extn("starttls")):
                raise _NotReady("SMTP offers no AUTH or STARTTLS yet")
        with smtplib.SMTP_SSL(self.host, self.ports.smtps, timeout=5, context=self.ssl_context()) as smtp:
            smtp.ehlo()
            if not smtp.has_extn("auth"):
                raise _NotReady("SMTPS offers no AUTH yet")

    def _wait_rcpt_accepted(self, address: str, deadline: float) -> None:
        self._retry(lambda: self._probe_rcpt(address, 250), deadline)

    def _probe_rcpt(self, address: str, expected: int) -> None:
        with smtplib.SMTP(self.host, self.ports.smtp, timeout=5) as smtp:
            smtp.ehlo()
            smtp.mail("")
            code, reply = smtp.rcpt(address)
            if code != expected:
                raise _NotReady(f"RCPT TO:<{address}> answered {code} {reply!r}")


class _NotReady(Exception):
    pass


def _state(pid: int) -> str | None:
    """The process state letter of ``pid`` (``None`` when there is no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def process_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid`` (each master leads its own group)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members
