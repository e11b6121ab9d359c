"""`make demo-call`: calls through a running `make run`, and what to look for.

1. Starts the two default vendors (SIPp, answering 200) on 127.0.0.1:5090 and
   :5092 unless something already listens there.
2. Call 1: an unsigned call from 127.0.0.1.  The service signs it (attestation
   A: 127.0.0.1 is a trusted source owning every number) and sends it to the
   ``required`` vendor on 5090.  We print the INVITE the vendor got and verify
   its Identity with the library, fetching the certificate from the service's
   certificate server.
3. Call 2: a call that already carries a valid Identity (signed here with the
   dev PKI).  The service verifies it and marks P-Asserted-Identity with
   ``verstat=TN-Validation-Passed``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stirshaken.cache import CertificateCache  # noqa: E402
from stirshaken.certs import TrustStore  # noqa: E402
from stirshaken.fetcher import HttpsFetcher  # noqa: E402
from stirshaken.signer import Signer  # noqa: E402
from stirshaken.verifier import Verifier  # noqa: E402
from tests import harness  # noqa: E402

PKI = REPO / "pki"
CALLER, CALLEE = "+12155550121", "+12155550131"


def show(title: str, invite: str) -> None:
    print(f"--- {title} ---")
    for line in invite.splitlines():
        if line.split(":", 1)[0].lower() in ("invite sip", "from", "p-asserted-identity", "date", "identity", "reason"):
            print("   ", line if len(line) < 160 else line[:157] + "...")
        elif line.startswith("INVITE "):
            print("   ", line)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sip-port", type=int, default=5060)
    parser.add_argument("--vendor-ports", default="5090 5092")
    parser.add_argument("--cert-port", type=int, default=8443)
    args = parser.parse_args()

    if harness.sip_options(args.sip_port, timeout=1.0) is None:
        print(f"demo-call: nothing answers on udp 127.0.0.1:{args.sip_port}; start it with `make run` first")
        return 1
    work = REPO / "run" / "demo"
    work.mkdir(parents=True, exist_ok=True)
    vendors: list[harness.SippUas] = []
    try:
        for port in (int(p) for p in args.vendor_ports.split()):
            if harness._udp_port_taken(port):
                print(f"demo-call: 127.0.0.1:{port} is taken (make demo-vendors?); its INVITEs are not shown")
            else:
                vendors.append(harness.SippUas("vendor/uas.xml", work, port=port))

        x5u = f"https://127.0.0.1:{args.cert_port}/sp.pem"
        fetcher = HttpsFetcher(allow_hosts=frozenset({"127.0.0.1"}), tls_ca_file=str(PKI / "root.pem"),
                               allowed_ports=frozenset({args.cert_port}))
        verifier = Verifier(certificates=CertificateCache(fetcher=fetcher,
                                                          trust_store=TrustStore.from_directory(PKI / "trust")),
                            country_code="1")

        print(f"call 1: unsigned INVITE {CALLER} -> {CALLEE} from 127.0.0.1")
        result = harness.run_uac(args.sip_port, work, caller=CALLER, callee=CALLEE)
        print(f"  caller got: {result.final}")
        got = [invite for vendor in vendors for invite in vendor.invites()]
        if got:
            show("INVITE as the vendor got it", got[-1])
            ids = harness.header_values(got[-1], "Identity")
            dates = harness.header_values(got[-1], "Date")
            if ids:
                verdict = verifier.verify(ids, date=dates[0] if dates else None, orig=CALLER[1:], dest=[CALLEE[1:]])
                print(f"  our verifier says: {verdict.verstat} (attest {verdict.attest}) {verdict.detail}")

        print(f"\ncall 2: INVITE already signed (attest B) with the dev PKI, x5u {x5u}")
        signed = Signer.from_files(key_path=PKI / "sp-key.pem", x5u=x5u, cert_path=PKI / "sp-cert.pem").sign(
            orig=CALLER[1:], dest=[CALLEE[1:]], attest="B")
        before = sum(len(v.invites()) for v in vendors)
        result = harness.run_uac(args.sip_port, work, caller=CALLER, callee=CALLEE, headers=[
            f"P-Asserted-Identity: <sip:{CALLER}@127.0.0.1>", f"Identity: {signed.identity}", f"Date: {signed.date}"])
        print(f"  caller got: {result.final}")
        got = [invite for vendor in vendors for invite in vendor.invites()]
        if len(got) > before:
            show("INVITE as the vendor got it", got[-1])
        print("\nlook for: ';verstat=...' on P-Asserted-Identity/From, Identity + Date on the INVITE to the "
              "'required' vendor (5090), and the Kamailio log lines starting 'stirshaken:'")
        return 0 if result.final == "200" else 1
    finally:
        for vendor in vendors:
            vendor.stop()


if __name__ == "__main__":
    sys.exit(main())
