/* SPDX-License-Identifier: MIT */
/*
 * json.h — the in-memory JSON writer.
 *
 * The body of the top-level object is built in the global buffer J by the
 * j*() helpers below (key == NULL: an array element); the caller (emit() in
 * vfio-agent.c) wraps it in {"ok":...,<body>} and prints it as one line.
 * Strings come out as pure 7-bit printable ASCII (see jstring()).
 */
#ifndef VFIO_AGENT_JSON_H
#define VFIO_AGENT_JSON_H

#include <stdbool.h>
#include <stddef.h>

#define JMAX_DEPTH 16

struct jbuf {
	char *p;
	size_t len, cap;
	int depth;                  /* 0 = directly inside the top object */
	bool first[JMAX_DEPTH + 1]; /* no member written yet at this depth */
	char closer[JMAX_DEPTH + 1];
	bool oom;
};

#define JBUF_INIT { .first = { true } }

/* The body of the one JSON object the agent prints. */
extern struct jbuf J;

/* Raw output into any buffer (no separators, no escaping except jstring). */
void jraw(struct jbuf *j, const char *s, size_t n);
void jputs(struct jbuf *j, const char *s);
void jprintf(struct jbuf *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Append str as a JSON string literal: control characters, DEL and every
 * non-ASCII code point \u-escaped (surrogate pairs above U+FFFF); bytes that
 * are not valid UTF-8 are taken as Latin-1 (\u00XX).
 */
void jstring(struct jbuf *j, const char *str);

/* Members of J (key) or elements of the open array (key == NULL). */
void jobj(const char *key);
void jarr(const char *key);
void jclose(void);
void jclose_all(void);
void jstr(const char *key, const char *v); /* v == NULL: null */
void jint(const char *key, long long v);
void juint(const char *key, unsigned long long v);
void jbool(const char *key, bool v);
void jnull(const char *key);
/* Register value: "0x" + 2*width hex digits (width in bytes). */
void jhexw(const char *key, unsigned long long v, int width);
/* Address-like value: "0x" + minimal hex digits. */
void jhex(const char *key, unsigned long long v);
/* Milliseconds, 3 decimals, negative clamped to 0. */
void jms(const char *key, double ms);

#endif
