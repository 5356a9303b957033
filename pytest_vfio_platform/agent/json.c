// SPDX-License-Identifier: MIT
/*
 * json.c — the in-memory JSON writer (see json.h).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

struct jbuf J = JBUF_INIT;

void jraw(struct jbuf *j, const char *s, size_t n)
{
	if (j->oom)
		return;
	if (j->len + n + 1 > j->cap) {
		size_t nc = j->cap ? j->cap : 1024;
		char *np;

		while (j->len + n + 1 > nc)
			nc *= 2;
		np = realloc(j->p, nc);
		if (!np) {
			j->oom = true;
			return;
		}
		j->p = np;
		j->cap = nc;
	}
	memcpy(j->p + j->len, s, n);
	j->len += n;
	j->p[j->len] = '\0';
}

void jputs(struct jbuf *j, const char *s)
{
	jraw(j, s, strlen(s));
}

void jprintf(struct jbuf *j, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	jraw(j, tmp, (size_t)n);
}

/*
 * Decode one UTF-8 sequence at s (n bytes available).  Returns its length
 * and stores the code point, or returns 0 if the bytes are not valid UTF-8
 * (overlong forms, surrogates and values above U+10FFFF are invalid).
 */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	uint32_t c;
	size_t len, i;

	if (n == 0)
		return 0;
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	} else if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		c = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		c = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		c = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) ||
	    (len == 4 && c < 0x10000) || c > 0x10ffff ||
	    (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

/*
 * Append s as a JSON string literal.  The output is pure 7-bit printable
 * ASCII (safe over any serial console): control characters, DEL and every
 * non-ASCII code point are \u-escaped (surrogate pairs above U+FFFF).
 * Bytes that are not valid UTF-8 are taken as Latin-1 (\u00XX).
 */
void jstring(struct jbuf *j, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str), i = 0;

	jraw(j, "\"", 1);
	while (i < n) {
		unsigned char c = s[i];
		uint32_t cp;
		size_t l;

		if (c == '"') {
			jraw(j, "\\\"", 2);
			i++;
		} else if (c == '\\') {
			jraw(j, "\\\\", 2);
			i++;
		} else if (c == '\n') {
			jraw(j, "\\n", 2);
			i++;
		} else if (c == '\r') {
			jraw(j, "\\r", 2);
			i++;
		} else if (c == '\t') {
			jraw(j, "\\t", 2);
			i++;
		} else if (c >= 0x20 && c < 0x7f) {
			jraw(j, (const char *)&s[i], 1);
			i++;
		} else if (c < 0x80) { /* other controls and DEL */
			jprintf(j, "\\u%04x", c);
			i++;
		} else if ((l = utf8_decode(s + i, n - i, &cp)) != 0) {
			if (cp >= 0x10000) {
				cp -= 0x10000;
				jprintf(j, "\\u%04x\\u%04x",
					0xd800 + (unsigned)(cp >> 10),
					0xdc00 + (unsigned)(cp & 0x3ff));
			} else {
				jprintf(j, "\\u%04x", (unsigned)cp);
			}
			i += l;
		} else {
			jprintf(j, "\\u%04x", c);
			i++;
		}
	}
	jraw(j, "\"", 1);
}

/* Start a member (key != NULL, inside an object) or an array element. */
static void jkey(struct jbuf *j, const char *key)
{
	if (!j->first[j->depth])
		jraw(j, ",", 1);
	j->first[j->depth] = false;
	if (key) {
		jstring(j, key);
		jraw(j, ":", 1);
	}
}

static void jopen(struct jbuf *j, const char *key, char open, char close)
{
	jkey(j, key);
	jraw(j, &open, 1);
	if (j->depth < JMAX_DEPTH) {
		j->depth++;
		j->first[j->depth] = true;
		j->closer[j->depth] = close;
	} else {
		j->oom = true; /* nesting bug: refuse to emit broken JSON */
	}
}

void jobj(const char *key) { jopen(&J, key, '{', '}'); }
void jarr(const char *key) { jopen(&J, key, '[', ']'); }

void jclose(void)
{
	if (J.depth > 0) {
		jraw(&J, &J.closer[J.depth], 1);
		J.depth--;
	}
}

void jclose_all(void)
{
	while (J.depth > 0)
		jclose();
}

void jstr(const char *key, const char *v)
{
	jkey(&J, key);
	if (v)
		jstring(&J, v);
	else
		jputs(&J, "null");
}

void jint(const char *key, long long v)
{
	jkey(&J, key);
	jprintf(&J, "%lld", v);
}

void juint(const char *key, unsigned long long v)
{
	jkey(&J, key);
	jprintf(&J, "%llu", v);
}

void jbool(const char *key, bool v)
{
	jkey(&J, key);
	jputs(&J, v ? "true" : "false");
}

void jnull(const char *key)
{
	jkey(&J, key);
	jputs(&J, "null");
}

/* Register value: "0x" + 2*width hex digits (width in bytes). */
void jhexw(const char *key, unsigned long long v, int width)
{
	jkey(&J, key);
	jprintf(&J, "\"0x%0*llx\"", width * 2, v);
}

/* Address-like value: "0x" + minimal hex digits. */
void jhex(const char *key, unsigned long long v)
{
	jkey(&J, key);
	jprintf(&J, "\"0x%llx\"", v);
}

void jms(const char *key, double ms)
{
	jkey(&J, key);
	if (ms < 0)
		ms = 0;
	jprintf(&J, "%.3f", ms);
}
