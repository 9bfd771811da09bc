// The C reference for `deno task bench:netdev`: the smallest honest read/write loop on a tap,
// with the same syscall pattern as net/netdev.ts (a non-blocking fd, read until EAGAIN, one
// poll per burst). Compiled by bench/netdev.ts with the machine's `cc -O2`.
//
//   tap_loop rx IFNAME SIZE N TIMEOUT_MS WARM IDLE_MS
//   tap_loop tx IFNAME SIZE N TIMEOUT_MS WARM DST_MAC SRC_MAC
//
// It attaches to the persistent tap IFNAME (TUNSETIFF, IFF_TAP | IFF_NO_PI), prints "ready",
// waits for a line on stdin, then receives until N frames, IDLE_MS without a frame, or
// TIMEOUT_MS in all; or sends N frames of SIZE bytes (ethertype 0x88b5). It prints one JSON
// line, with the same fields and the same measuring window as bench/_netdev_worker.ts: the
// window starts after WARM frames (the Deno contenders' JIT warm-up; the C loop is measured
// the same way) and ends at the last frame; the clock is read every 64 frames and when the
// queue runs empty, the CPU time (getrusage: user + system) at the window's two ends.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// CPU time (user + system) of this process so far, in seconds.
static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int parse_mac(const char *s, unsigned char *out) {
  unsigned v[6];
  if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) return -1;
  for (int i = 0; i < 6; i++) out[i] = (unsigned char)v[i];
  return 0;
}

static void die(const char *what) {
  fprintf(stderr, "tap_loop: %s: %s\n", what, strerror(errno));
  exit(1);
}

// The two ends of the measuring window: frame 1 and frame WARM (when the run got that far).
struct mark {
  long frames;
  double t, cpu;
};

int main(int argc, char **argv) {
  if (argc < 8) {
    fprintf(stderr, "usage: tap_loop rx|tx IFNAME SIZE N TIMEOUT_MS WARM IDLE_MS|DST SRC\n");
    return 2;
  }
  int tx = strcmp(argv[1], "tx") == 0;
  const char *ifname = argv[2];
  long size = atol(argv[3]);
  long n = atol(argv[4]);
  double timeout = atof(argv[5]) / 1000.0;
  long warm = atol(argv[6]);
  if (size < 60 || size > 65535 || n <= 0 || warm < 1) {
    fprintf(stderr, "tap_loop: bad size, count or warm-up\n");
    return 2;
  }

  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open(/dev/net/tun)");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("ioctl(TUNSETIFF)");
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");

  static unsigned char buf[65536 + 16];
  printf("ready\n");
  fflush(stdout);
  char line[64];
  if (!fgets(line, sizeof line, stdin)) return 1;

  long frames = 0, bytes = 0, retries = 0, timed = 0;
  double start = now_s(), cpu_go = cpu_s(), last = 0, cpu_end = -1;
  struct mark one = {0, 0, 0}, warmed = {0, 0, 0};
  struct pollfd p = {.fd = fd};
  if (!tx) {
    int idle_ms = atoi(argv[7]);
    while (frames < n) {
      ssize_t r = read(fd, buf, sizeof buf);
      if (r > 0) {
        frames++;
        bytes += r;
        if ((frames & 63) == 0 || frames == n || frames == 1 || frames == warm) {
          last = now_s();
          timed = frames;
          if (frames == 1) one = (struct mark){1, last, cpu_s()};
          if (frames == warm) warmed = (struct mark){warm, last, cpu_s()};
          if (frames == n) cpu_end = cpu_s();
        }
        continue;
      }
      if (r < 0 && errno != EAGAIN && errno != EINTR) die("read(tap)");
      // Empty: one poll, as the Deno side waits once per burst.
      if (frames > 0) {
        last = now_s();
        timed = frames;
      }
      if (now_s() - start > timeout) break;
      p.events = POLLIN;
      int pr = poll(&p, 1, frames > 0 ? idle_ms : 1000);
      if (pr < 0 && errno != EINTR) die("poll");
      if (pr == 0 && frames > 0) break; // idle: the sender is done
    }
  } else {
    memset(buf, 0, (size_t)size);
    if (argc < 9 || parse_mac(argv[7], buf) < 0 || parse_mac(argv[8], buf + 6) < 0) {
      fprintf(stderr, "tap_loop: tx needs DST and SRC MACs\n");
      return 2;
    }
    buf[12] = 0x88;
    buf[13] = 0xb5;
    one = (struct mark){0, now_s(), cpu_s()};
    while (frames < n) {
      ssize_t w = write(fd, buf, (size_t)size);
      if (w < 0) {
        if (errno == EAGAIN || errno == ENOBUFS) {
          p.events = POLLOUT;
          if (poll(&p, 1, 100) < 0 && errno != EINTR) die("poll");
          retries++; // the frame is written again
          continue;
        }
        die("write(tap)");
      }
      frames++;
      bytes += w;
      if (frames == warm) warmed = (struct mark){warm, now_s(), cpu_s()};
      if ((frames & 4095) == 0 && now_s() - start > timeout) break;
    }
    last = now_s();
    timed = frames;
  }
  if (cpu_end < 0) cpu_end = cpu_s();
  // The window starts after the warm-up when there were frames after it, else at frame 1.
  struct mark from = warmed.frames > 0 && timed > warmed.frames ? warmed : one;
  long window = frames - from.frames;
  // RX: the clock was last read at frame `timed`; scale to the frames after it.
  double secs = timed > from.frames ? (last - from.t) * (double)window / (timed - from.frames) : 0;
  printf("{\"frames\":%ld,\"bytes\":%ld,\"windowFrames\":%ld,\"seconds\":%.9f,"
         "\"cpuSeconds\":%.6f,\"allCpuSeconds\":%.6f,\"retries\":%ld}\n",
         frames, bytes, window, secs, cpu_end - from.cpu, cpu_end - cpu_go, retries);
  close(fd);
  return 0;
}
