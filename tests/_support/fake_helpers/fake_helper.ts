// A misbehaving bridge helper for the runHelper/bridgeNetdev tests: it is started exactly as a
// real helper (`fake_helper.ts MODE [--use-vnet] --fd=3 --br=BR`) and does one thing wrong
// (or right) on purpose. Written in Deno on sys/libc.ts because CI has no python3 for
// socket.send_fds. Modes that create a tun or tap need CAP_NET_ADMIN and run inside a test
// namespace (`ip netns exec`), so no interface ever appears in the host's namespace.

import { NetControl } from "../../../net/bridge.ts";
import { attachTap, openTun } from "../../../net/tap.ts";
import {
  fstat,
  getsockoptInt,
  O,
  open,
  S,
  sendFd,
  SOCK,
  socketpair,
  write,
} from "../../../sys/libc.ts";
import { IFF } from "../../../sys/structs.ts";

const [mode, ...rest] = Deno.args;
const fdArg = rest.find((a) => a.startsWith("--fd="));
const sock = fdArg === undefined ? -1 : Number(fdArg.slice(5));
const bridge = rest.find((a) => a.startsWith("--br="))?.slice(5) ?? "br0";
const say = (s: string) => console.error(`fake-helper(${mode}): ${s}`);

/**
 * A fresh non-persistent tap (or tun) in this process's namespace; its fd stays open here. With
 * `master`, the tap is added to that bridge and brought up, as a real helper does.
 */
function newTun(flags: number, template: string, master?: string): number {
  const fd = openTun();
  const name = attachTap(fd, flags, template);
  if (master !== undefined) {
    using ctl = new NetControl();
    ctl.addToBridge(master, name);
    ctl.up(name);
  }
  return fd.release();
}

switch (mode) {
  case "fail":
    // What the real helper does when the ACL says no: a message and exit 1.
    say("access denied by acl file");
    Deno.exit(1);
    break;
  case "silent":
    // Exit 0 without sending: QEMU would adopt its own fd 0 as the tap.
    say("exiting 0 without sending anything");
    Deno.exit(0);
    break;
  case "devnull":
    sendFd(sock, open("/dev/null", O.RDWR));
    say("sent /dev/null");
    Deno.exit(0);
    break;
  case "socket": {
    const [a] = socketpair(SOCK.AF_UNIX, SOCK.STREAM);
    sendFd(sock, a);
    say("sent one end of a socketpair");
    Deno.exit(0);
    break;
  }
  case "data":
    // The one data byte of the protocol, but no SCM_RIGHTS control message.
    write(sock, new Uint8Array(new ArrayBuffer(1)));
    say("sent a data byte with no fd");
    Deno.exit(0);
    break;
  case "tun":
    sendFd(sock, newTun(IFF.TUN | IFF.NO_PI, "vmbtun%d"));
    say("sent a tun fd");
    Deno.exit(0);
    break;
  case "tap":
    // What a real helper does: a tap on the --br bridge (which the test made).
    sendFd(sock, newTun(IFF.TAP | IFF.NO_PI, "tap%d", bridge));
    say("sent a tap fd");
    Deno.exit(0);
    break;
  case "tap-loose":
    sendFd(sock, newTun(IFF.TAP | IFF.NO_PI, "tap%d"));
    say("sent a tap that is on no bridge");
    Deno.exit(0);
    break;
  case "tap-other":
    // A tap on another bridge than the one asked for (br1, which the test made).
    sendFd(sock, newTun(IFF.TAP | IFF.NO_PI, "tap%d", "br1"));
    say("sent a tap on br1");
    Deno.exit(0);
    break;
  case "flood": {
    // Writes to its socket until it is killed: the caller must not collect all of it.
    const junk = new Uint8Array(new ArrayBuffer(4096)).fill(0x55);
    for (;;) write(sock, junk);
  }
  case "flood-stderr": {
    // Writes to stderr until it is killed, and never exits by itself.
    const junk = new Uint8Array(new ArrayBuffer(4096)).fill(0x41);
    for (;;) write(2, junk);
  }
  case "tap-fail":
    // QEMU leaks the fd on this path; the library must close it (and so remove the tap).
    sendFd(sock, newTun(IFF.TAP | IFF.NO_PI, "tap%d"));
    say("sent a tap fd, then failed");
    Deno.exit(1);
    break;
  case "two-taps":
    // Two sendmsg calls: a Unix stream socket never merges two SCM_RIGHTS messages into one
    // recvmsg, so the receiver sees two messages with one fd each.
    sendFd(sock, newTun(IFF.TAP | IFF.NO_PI, "tap%d"));
    sendFd(sock, newTun(IFF.TAP | IFF.NO_PI, "tap%d"));
    say("sent two tap fds");
    Deno.exit(0);
    break;
  case "sockinfo": {
    // Report what fd 3 is: type, domain, file type, and exit 1 so the report is the error.
    const info = {
      fd: sock,
      isSocket: (fstat(sock).mode & S.IFMT) === S.IFSOCK,
      type: getsockoptInt(sock, SOCK.SOL_SOCKET, SOCK.SO_TYPE),
      domain: getsockoptInt(sock, SOCK.SOL_SOCKET, SOCK.SO_DOMAIN),
      stdin: Deno.readLinkSync("/proc/self/fd/0"),
    };
    console.error(`sockinfo ${JSON.stringify(info)}`);
    Deno.exit(1);
    break;
  }
  default:
    say(`unknown mode ${JSON.stringify(mode)}`);
    Deno.exit(2);
}
