// configfuzz.c: TestConfigParserSanitized builds this with rootfs.c under
// AddressSanitizer and UBSan. It feeds skiff_config_parse (each input in
// a buffer of exactly its size, so that a read past the end is caught)
// and skiff_config_recv (through a pipe) mutations of a valid payload:
// truncations, random bytes, NULs, digits, appended bytes.
// Usage: configfuzz ITERATIONS SEED
#include "rootfs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char seed[] = "skiff-init-1\0"
                           "268435456\0/r\0/u\0/w\0"
                           "1\0/cwd\0"
                           "1000\0"
                           "0\0"
                           "2\0/l1\0/l2\0"
                           "2\0bind\0/s\0/d\0\0"
                           "1\0tmpfs\0\0/t\0size=1m\0"
                           "0\0"
                           "2\0sh\0-c\0"
                           "1\0PATH=/bin\0";

int main(int argc, char **argv) {
	long iterations = argc > 1 ? atol(argv[1]) : 100000;
	srand(argc > 2 ? (unsigned)atoi(argv[2]) : 1);
	size_t sl = sizeof seed - 1;
	char err[256];
	struct skiff_config cfg;
	char *b = malloc(sl);
	memcpy(b, seed, sl);
	if (skiff_config_parse(b, sl, &cfg, err, sizeof err) != 0) {
		fprintf(stderr, "the seed fails: %s\n", err);
		return 1;
	}
	skiff_config_free(&cfg);
	free(b);
	long ok = 0;
	for (long it = 0; it < iterations; it++) {
		char tmp[1024];
		size_t n = sl;
		memcpy(tmp, seed, sl);
		for (int m = 1 + rand() % 4; m > 0; m--) {
			switch (rand() % 5) {
			case 0:
				n = n ? (size_t)rand() % n : 0;
				break;
			case 1:
				if (n)
					tmp[rand() % n] = (char)rand();
				break;
			case 2:
				if (n)
					tmp[rand() % n] = 0;
				break;
			case 3:
				if (n)
					tmp[rand() % n] = (char)('0' + rand() % 10);
				break;
			case 4:
				if (n < sizeof tmp)
					tmp[n++] = rand() % 2 ? 0 : 'x';
				break;
			}
		}
		b = malloc(n ? n : 1);
		memcpy(b, tmp, n);
		err[0] = 0;
		if (skiff_config_parse(b, n, &cfg, err, sizeof err) == 0) {
			ok++;
			skiff_config_free(&cfg);
		} else if (err[0] == 0) {
			fprintf(stderr, "an error without a message\n");
			return 1;
		}
		free(b);
		int p[2];
		if (it % 100 == 0 && pipe(p) == 0) {
			unsigned char h[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
			                      (unsigned char)n};
			if (write(p[1], h, (size_t)rand() % 5) < 0 || (rand() % 2 && write(p[1], tmp, (size_t)rand() % (n + 1)) < 0))
				return 1;
			close(p[1]);
			if (skiff_config_recv(p[0], &cfg, err, sizeof err) == 0)
				skiff_config_free(&cfg);
			close(p[0]);
		}
	}
	printf("%ld of %ld parsed\n", ok, iterations);
	return 0;
}
