// SPDX-License-Identifier: MIT
/*
 * agent.c — diagnostics, the recorded error, usage-error messages
 * (see agent.h).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"

bool g_verbose;
struct agent_error g_err;
char g_usage_msg[512];

void copy_str(char *dst, size_t n, const char *src)
{
	size_t l = strlen(src);

	if (!n)
		return;
	if (l >= n)
		l = n - 1;
	memcpy(dst, src, l);
	dst[l] = '\0';
}

void diag(const char *fmt, ...)
{
	va_list ap;

	fputs("vfio-agent: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int fail(const char *step, int err, const char *fmt, ...)
{
	if (g_err.set) /* keep the first (root) cause */
		return -1;
	g_err.set = true;
	snprintf(g_err.step, sizeof(g_err.step), "%s", step);
	g_err.err = err;
	g_err.detail[0] = '\0';
	if (fmt) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(g_err.detail, sizeof(g_err.detail), fmt, ap);
		va_end(ap);
	}
	diag("error: %s: %s%s%s", g_err.step,
	     err ? strerror(err) : "(agent check)",
	     g_err.detail[0] ? ": " : "", g_err.detail);
	return -1;
}

int usage_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(g_usage_msg, sizeof(g_usage_msg), fmt, ap);
	va_end(ap);
	return -1;
}
