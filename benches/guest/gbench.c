/* The guest side of benches/guest-compare.sh, built static and carried into the initramfs:
 *   gbench seqread  DEV MIB        1 MiB O_DIRECT reads of the first MIB MiB
 *   gbench seqwrite DEV MIB        1 MiB O_DIRECT writes of the first MIB MiB, then fsync
 *   gbench randread DEV THREADS N  4 KiB O_DIRECT reads at random aligned offsets, N per thread
 * prints "RESULT mode mib_per_s iops" with the elapsed time from CLOCK_MONOTONIC. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static const char *dev;
static uint64_t blocks;
static long per_thread;

static void *reader(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;
    int fd = open(dev, O_RDONLY | O_DIRECT);
    void *buf;
    if (fd < 0 || posix_memalign(&buf, 4096, 4096)) { perror("open"); exit(1); }
    for (long i = 0; i < per_thread; i++) {
        seed = seed * 1103515245u + 12345u;
        uint64_t b = ((uint64_t)seed << 16 ^ (uint64_t)rand_r(&seed)) % blocks;
        if (pread(fd, buf, 4096, (off_t)(b * 4096)) != 4096) { perror("pread"); exit(1); }
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: see the source\n"); return 2; }
    dev = argv[2];
    if (!strcmp(argv[1], "randread")) {
        int threads = atoi(argv[3]);
        per_thread = argc > 4 ? atol(argv[4]) : 1000;
        int fd = open(dev, O_RDONLY);
        uint64_t bytes = 0;
        if (fd < 0 || ioctl(fd, BLKGETSIZE64, &bytes)) { perror("size"); return 1; }
        close(fd);
        blocks = bytes / 4096;
        pthread_t t[256];
        double t0 = now();
        for (int i = 0; i < threads && i < 256; i++) pthread_create(&t[i], NULL, reader, (void *)(uintptr_t)(i + 1));
        for (int i = 0; i < threads && i < 256; i++) pthread_join(t[i], NULL);
        double s = now() - t0;
        double ops = (double)threads * per_thread;
        printf("RESULT randread%d %.1f %.0f\n", threads, ops * 4096 / s / 1048576, ops / s);
        return 0;
    }
    int write = !strcmp(argv[1], "seqwrite");
    long mib = atol(argv[3]);
    int fd = open(dev, (write ? O_WRONLY : O_RDONLY) | O_DIRECT);
    void *buf;
    if (fd < 0 || posix_memalign(&buf, 4096, 1 << 20)) { perror("open"); return 1; }
    memset(buf, 0x5a, 1 << 20);
    double t0 = now();
    for (long i = 0; i < mib; i++) {
        ssize_t n = write ? pwrite(fd, buf, 1 << 20, (off_t)i << 20) : pread(fd, buf, 1 << 20, (off_t)i << 20);
        if (n != 1 << 20) { perror(write ? "pwrite" : "pread"); return 1; }
    }
    if (write && fsync(fd)) { perror("fsync"); return 1; }
    double s = now() - t0;
    printf("RESULT %s %.1f %.0f\n", argv[1], mib / s, mib / s);
    return 0;
}
