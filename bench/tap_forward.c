// The C reference for `deno task bench:forward`: the smallest honest L2 forwarder between two
// taps, with the syscall pattern of examples/forward.ts on a Netdev (non-blocking fds, read until
// EAGAIN, one poll when both are empty). Compiled by bench/forward.ts with the machine's `cc -O2`.
//
//   tap_forward IFNAME_A IFNAME_B VNET_HDR(0|1) OFFLOAD_BITS
//
// It attaches to the two persistent taps by name (TUNSETIFF, IFF_TAP | IFF_NO_PI, plus
// IFF_VNET_HDR when asked), applies TUNSETOFFLOAD with OFFLOAD_BITS (TUN_F_*) when non-zero,
// prints "ready", and forwards every frame, header and all, until SIGTERM. A write the kernel
// refuses drops the frame, as a NIC does.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static void die(const char *what) {
  fprintf(stderr, "tap_forward: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int attach(const char *name, int vnet, unsigned long offloads) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open(/dev/net/tun)");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("ioctl(TUNSETIFF)");
  if (offloads && ioctl(fd, TUNSETOFFLOAD, offloads) < 0) die("ioctl(TUNSETOFFLOAD)");
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
  return fd;
}

// Moves what is waiting on `from` to `to`, at most `burst` frames; returns how many were read.
static long pump(int from, int to, unsigned char *buf, size_t len, long burst, long *drops) {
  long n = 0;
  for (; n < burst; n++) {
    ssize_t got = read(from, buf, len);
    if (got < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      die("read");
    }
    if (write(to, buf, (size_t)got) < 0) (*drops)++;
  }
  return n;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: tap_forward IFNAME_A IFNAME_B VNET_HDR OFFLOAD_BITS\n");
    return 2;
  }
  int vnet = atoi(argv[3]);
  unsigned long offloads = strtoul(argv[4], NULL, 0);
  int a = attach(argv[1], vnet, offloads);
  int b = attach(argv[2], vnet, offloads);
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  static unsigned char buf[65536 + 256];
  long drops = 0, frames = 0;
  printf("ready\n");
  fflush(stdout);
  struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
  while (!stop) {
    long n = pump(a, b, buf, sizeof buf, 512, &drops) + pump(b, a, buf, sizeof buf, 512, &drops);
    frames += n;
    if (n == 0 && poll(p, 2, -1) < 0 && errno != EINTR) die("poll");
  }
  fprintf(stderr, "tap_forward: %ld frames, %ld dropped\n", frames, drops);
  return 0;
}
