/* SPDX-License-Identifier: MIT */
/*
 * agent.h — what every part of vfio-agent shares: version numbers, exit
 * codes, stderr diagnostics, the recorded error of a failed step and the
 * message of a usage error.  No VFIO here (the parsers' unit test links this).
 */
#ifndef VFIO_AGENT_AGENT_H
#define VFIO_AGENT_AGENT_H

#include <stdbool.h>
#include <stddef.h>

#define AGENT_VERSION "1.0"
#define JSON_SCHEMA_VERSION 1

/* Exit codes. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* ---- diagnostics (stderr, every line prefixed "vfio-agent: ") ----------- */

extern bool g_verbose; /* -v/--verbose: trace every step */

void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define trace(...)                         \
	do {                               \
		if (g_verbose)             \
			diag(__VA_ARGS__); \
	} while (0)

/* Bounded string copy that always NUL-terminates (truncates silently). */
void copy_str(char *dst, size_t n, const char *src);

/* ---- the error reported in the JSON "error" object ---------------------- */

struct agent_error {
	bool set;
	char step[64];
	int err; /* errno; 0 = detected by the agent, no syscall failed */
	char detail[512];
};

extern struct agent_error g_err;

/*
 * Record a failed step (only the first one: the root cause) and say so on
 * stderr.  fmt may be NULL (no detail).  Always returns -1.
 */
int fail(const char *step, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- usage errors ------------------------------------------------------- */

/* The message of the last usage error (the JSON error "detail"). */
extern char g_usage_msg[512];

/* Set g_usage_msg; returns -1. */
int usage_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
