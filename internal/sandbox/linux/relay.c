// relay.c: the stdio relay of a container started with TTY or Stdin.
//
// Only such containers get one. The runtime starts this binary with
// _SKIFF_RELAY=tty|pipe in its own session (no pdeathsig: it outlives the
// agent, like the workload) with
//
//     fd 3  input: the pty master (tty) or the write end of the stdin pipe
//     fd 4  output: the pty master (tty) or the read end of the output pipe
//     fd 5  the container's current.log (O_APPEND)
//     fd 6  a listening unix socket (attach.sock in the container's dir)
//
// It copies the workload's output to the log and to the attached client
// (one at a time; a new one replaces the old), and the client's framed
// input to the workload:
//
//     type(1) length(2, big endian) payload
//     0 data     bytes for the workload's stdin / terminal
//     1 resize   rows(2) cols(2), big endian (tty only)
//     2 close    close the workload's stdin (pipe only)
//
// It exits when the output ends (EOF, or EIO on a pty master once every
// slave is closed), i.e. when the workload and its processes are gone.
// Single-threaded C, before the Go runtime: a tiny process.

#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <termios.h>
#include <unistd.h>

#define RELAY_IN 3
#define RELAY_OUT 4
#define RELAY_LOG 5
#define RELAY_LISTEN 6

static int relay_write(int fd, const char *p, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

__attribute__((constructor)) static void skiff_relay(void) {
	char *mode = getenv("_SKIFF_RELAY");
	if (mode == NULL)
		return;
	int tty = strcmp(mode, "tty") == 0;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	if (chdir("/") < 0) {
		/* not fatal */
	}
	int in = RELAY_IN, client = -1;
	static char out[32768];
	static char fr[3 + 65535 + 32768];
	size_t frlen = 0;
	for (;;) {
		struct pollfd p[3] = {
		    {.fd = RELAY_OUT, .events = POLLIN},
		    {.fd = RELAY_LISTEN, .events = POLLIN},
		    {.fd = client, .events = POLLIN},
		};
		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		if (p[0].revents) {
			ssize_t n = read(RELAY_OUT, out, sizeof out);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0)
				break; // the workload is gone (EOF; EIO on a pty)
			relay_write(RELAY_LOG, out, (size_t)n);
			if (client >= 0 && relay_write(client, out, (size_t)n) < 0) {
				close(client);
				client = -1;
			}
		}
		if (client >= 0 && p[2].revents) {
			ssize_t n = read(client, fr + frlen, sizeof fr - frlen);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0) {
				close(client);
				client = -1;
			} else {
				frlen += (size_t)n;
				size_t off = 0;
				while (frlen - off >= 3) {
					unsigned char *h = (unsigned char *)fr + off;
					size_t len = (size_t)h[1] << 8 | h[2];
					if (frlen - off < 3 + len)
						break;
					char *pl = fr + off + 3;
					switch (h[0]) {
					case 0:
						if (in >= 0)
							relay_write(in, pl, len);
						break;
					case 1:
						if (tty && len == 4) {
							unsigned char *s = (unsigned char *)pl;
							struct winsize ws = {.ws_row = (unsigned short)(s[0] << 8 | s[1]),
							                     .ws_col = (unsigned short)(s[2] << 8 | s[3])};
							ioctl(RELAY_IN, TIOCSWINSZ, &ws);
						}
						break;
					case 2:
						if (!tty && in >= 0) {
							close(in);
							in = -1;
						}
						break;
					}
					off += 3 + len;
				}
				memmove(fr, fr + off, frlen - off);
				frlen -= off;
			}
		}
		if (p[1].revents & POLLIN) {
			int c = accept4(RELAY_LISTEN, NULL, NULL, SOCK_CLOEXEC);
			if (c >= 0) {
				if (client >= 0)
					close(client);
				client = c;
				frlen = 0;
				// A client that stops reading must not stall the workload
				// for long: after this, it is dropped.
				struct timeval tv = {.tv_sec = 5};
				setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
			}
		}
	}
	_exit(0);
}
