/* plot: draws figures of side-by-side panels with cairo and writes them as
 * PNG with libpng. Each panel is laid out in three steps: fit the axes to
 * the data (y rounded out to nice ticks, x tight for lines and padded for
 * markers and bars), size the margins from the tick labels actually drawn,
 * then place the legend where it covers the least data, adding headroom to
 * the y axis when no corner is free. All layout is in pixels of the final
 * image; nothing is scaled afterwards, so text stays sharp. */
#include "plot.h"
#include "atomicfile.h"
#include "errmsg.h"

#include <cairo.h>
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PLOT_MAX_PANELS 8
#define PLOT_MAX_TEXT 32
#define PLOT_FONT "DejaVu Sans"
#define FS_TICK 12.0
#define FS_LABEL 13.5
#define FS_PTITLE 15.0
#define FS_TITLE 19.0
#define FS_SUBTITLE 13.5
#define FS_LEGEND 12.5
#define FS_VALUE 11.5
#define LEGEND_INSET 8.0

enum { K_LINE = 1, K_MARKERS = 2, K_BARS = 4 };

struct plot_series {
    int kind;      /* K_LINE and/or K_MARKERS, or K_BARS */
    double *x, *y; /* n points, owned */
    size_t n;
    plot_color_t color;
    plot_color_t *colors; /* per point, owned; NULL for none */
    double width, alpha;
    int dashed;
    char *label;     /* legend text, owned; NULL for none */
    char *value_fmt; /* point labels, owned; NULL for none */
    int bar_slot;    /* which bar of a group; set at layout */
};

/* An axis: range and tick step. */
typedef struct {
    double lo, hi, step;
} s_axis_t;

struct plot_panel {
    char *title, *xlabel, *ylabel, *yfmt, *empty_text;
    int xfixed, yfixed, xinteger, ybounded;
    double yb0, yb1;           /* bounds of a fitted y axis */
    double fx0, fx1, fy0, fy1; /* fixed ranges */
    char **cats;               /* categorical x, owned */
    int ncats;
    plot_series_t **series;
    int nseries, capseries;

    /* Layout, recomputed when drawn. */
    double ax, ay, aw, ah; /* plot area in pixels */
    s_axis_t xa, ya;
    int nbars;             /* bar series in the panel */
    double bar_w;          /* width of one bar, x units */
    double bar_group;      /* width of a group of bars, x units */
    double lx, ly, lw, lh; /* legend box; lw 0 for none */
    int lcols, lrows;
    double lcolw;
};

struct plot_fig {
    int width, height, npanels;
    char *title;
    plot_panel_t panels[PLOT_MAX_PANELS];
    char *text[PLOT_MAX_TEXT][2]; /* PNG text chunks: keyword, value; owned */
    int ntext;
};

/* ---- small helpers ---------------------------------------------------- */

static char *s_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void s_set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = s_strdup(src);
}

plot_color_t plot_palette(int i)
{
    /* Tableau 10: distinct, colour-blind friendly enough, prints well. */
    static const plot_color_t pal[10] = {
        {0.122, 0.467, 0.706}, {1.000, 0.498, 0.055}, {0.173, 0.627, 0.173}, {0.839, 0.153, 0.157},
        {0.580, 0.404, 0.741}, {0.549, 0.337, 0.294}, {0.890, 0.467, 0.761}, {0.498, 0.498, 0.498},
        {0.737, 0.741, 0.133}, {0.090, 0.745, 0.812},
    };
    if (i < 0)
        i = -i;
    return pal[i % 10];
}

/* ---- text --------------------------------------------------------------- */

static void s_font(cairo_t *cr, double size, int bold)
{
    cairo_select_font_face(cr, PLOT_FONT, CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

static double s_text_width(cairo_t *cr, const char *s, double size, int bold)
{
    cairo_text_extents_t te;
    s_font(cr, size, bold);
    cairo_text_extents(cr, s, &te);
    return te.x_advance;
}

/* Draws s with its box anchored at (x, y): ha 0 left, 0.5 centre, 1 right;
 * va 0 top, 0.5 middle, 1 bottom of the font's ascent+descent box, so lines
 * of different text align the same way. */
static void s_text(cairo_t *cr, double x, double y, const char *s, double size, int bold, double ha,
                   double va)
{
    cairo_font_extents_t fe;
    cairo_text_extents_t te;
    s_font(cr, size, bold);
    cairo_font_extents(cr, &fe);
    cairo_text_extents(cr, s, &te);
    double h = fe.ascent + fe.descent;
    cairo_move_to(cr, x - ha * te.x_advance, y - va * h + fe.ascent);
    cairo_show_text(cr, s);
}

static double s_line_height(double size)
{
    return size * 1.25;
}

static void s_format(char *buf, size_t len, const char *fmt, double v)
{
    /* fmt comes from this program, never from outside. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(buf, len, fmt, v);
#pragma GCC diagnostic pop
}

/* ---- figure and panel construction ------------------------------------- */

plot_fig_t *plot_fig_new(int width, int height, int npanels, const char *title)
{
    if (width < 100 || height < 100 || npanels < 1 || npanels > PLOT_MAX_PANELS)
        return NULL;
    plot_fig_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->width = width;
    f->height = height;
    f->npanels = npanels;
    f->title = s_strdup(title);
    return f;
}

void plot_fig_title(plot_fig_t *f, const char *title)
{
    if (f)
        s_set_str(&f->title, title);
}

static void s_series_free(plot_series_t *s)
{
    if (!s)
        return;
    free(s->x);
    free(s->y);
    free(s->colors);
    free(s->label);
    free(s->value_fmt);
    free(s);
}

void plot_fig_destroy(plot_fig_t **pf)
{
    if (!pf || !*pf)
        return;
    plot_fig_t *f = *pf;
    for (int i = 0; i < f->npanels; i++) {
        plot_panel_t *p = &f->panels[i];
        free(p->title);
        free(p->xlabel);
        free(p->ylabel);
        free(p->yfmt);
        free(p->empty_text);
        for (int c = 0; c < p->ncats; c++)
            free(p->cats[c]);
        free(p->cats);
        for (int s = 0; s < p->nseries; s++)
            s_series_free(p->series[s]);
        free(p->series);
    }
    free(f->title);
    for (int i = 0; i < f->ntext; i++) {
        free(f->text[i][0]);
        free(f->text[i][1]);
    }
    free(f);
    *pf = NULL;
}

/* A PNG keyword: 1 to 79 printable ASCII characters, no leading, trailing
 * or double spaces (the PNG specification's rule, narrowed to ASCII). */
static int s_keyword_ok(const char *k)
{
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ' || strstr(k, "  "))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (k[i] < 0x20 || k[i] > 0x7e)
            return 0;
    return 1;
}

int plot_fig_text(plot_fig_t *f, const char *key, const char *value, char *err, size_t errlen)
{
    if (!key || !s_keyword_ok(key)) {
        errmsg_set(err, errlen,
                   "PNG text keyword '%s' is not 1-79 printable ASCII characters without "
                   "leading, trailing or double spaces",
                   key ? key : "(null)");
        return -1;
    }
    for (int i = 0; i < f->ntext; i++) {
        if (!strcmp(f->text[i][0], key)) {
            s_set_str(&f->text[i][1], value ? value : "");
            return f->text[i][1] ? 0 : (errmsg_set(err, errlen, "out of memory"), -1);
        }
    }
    if (f->ntext == PLOT_MAX_TEXT) {
        errmsg_set(err, errlen, "more than %d PNG text entries ('%s')", PLOT_MAX_TEXT, key);
        return -1;
    }
    char *k = s_strdup(key), *v = s_strdup(value ? value : "");
    if (!k || !v) {
        free(k);
        free(v);
        errmsg_set(err, errlen, "out of memory");
        return -1;
    }
    f->text[f->ntext][0] = k;
    f->text[f->ntext][1] = v;
    f->ntext++;
    return 0;
}

plot_panel_t *plot_fig_panel(plot_fig_t *f, int i)
{
    if (!f || i < 0 || i >= f->npanels)
        return NULL;
    return &f->panels[i];
}

void plot_panel_title(plot_panel_t *p, const char *title)
{
    s_set_str(&p->title, title);
}

void plot_panel_labels(plot_panel_t *p, const char *xlabel, const char *ylabel)
{
    s_set_str(&p->xlabel, xlabel);
    s_set_str(&p->ylabel, ylabel);
}

/* The three range setters: a range is set only when lo < hi. */
static void s_set_range(int *set, double *r0, double *r1, double lo, double hi)
{
    if (!(lo < hi))
        return;
    *set = 1;
    *r0 = lo;
    *r1 = hi;
}

void plot_panel_xrange(plot_panel_t *p, double lo, double hi)
{
    s_set_range(&p->xfixed, &p->fx0, &p->fx1, lo, hi);
}

void plot_panel_yrange(plot_panel_t *p, double lo, double hi)
{
    s_set_range(&p->yfixed, &p->fy0, &p->fy1, lo, hi);
}

void plot_panel_ybounds(plot_panel_t *p, double lo, double hi)
{
    s_set_range(&p->ybounded, &p->yb0, &p->yb1, lo, hi);
}

void plot_panel_xinteger(plot_panel_t *p)
{
    p->xinteger = 1;
}

void plot_panel_xcategories(plot_panel_t *p, const char *const *names, int n)
{
    for (int c = 0; c < p->ncats; c++)
        free(p->cats[c]);
    free(p->cats);
    p->cats = NULL;
    p->ncats = 0;
    if (n <= 0)
        return;
    p->cats = calloc((size_t)n, sizeof *p->cats);
    if (!p->cats)
        return;
    for (int c = 0; c < n; c++)
        p->cats[c] = s_strdup(names[c] ? names[c] : "");
    p->ncats = n;
}

void plot_panel_yformat(plot_panel_t *p, const char *fmt)
{
    s_set_str(&p->yfmt, fmt);
}

void plot_panel_empty_text(plot_panel_t *p, const char *text)
{
    s_set_str(&p->empty_text, text);
}

static plot_series_t *s_add(plot_panel_t *p, int kind, const double *x, const double *y, size_t n,
                            plot_color_t c, const char *label)
{
    if (!p || (n && (!x || !y)))
        return NULL;
    if (p->nseries == p->capseries) {
        int cap = p->capseries ? 2 * p->capseries : 8;
        plot_series_t **ns = realloc(p->series, (size_t)cap * sizeof *ns);
        if (!ns)
            return NULL;
        p->series = ns;
        p->capseries = cap;
    }
    plot_series_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->kind = kind;
    s->n = n;
    s->color = c;
    s->width = 2.0;
    s->alpha = 1.0;
    s->x = malloc((n ? n : 1) * sizeof *s->x);
    s->y = malloc((n ? n : 1) * sizeof *s->y);
    if (!s->x || !s->y || (label && !(s->label = s_strdup(label)))) {
        s_series_free(s);
        return NULL;
    }
    if (n) {
        memcpy(s->x, x, n * sizeof *x);
        memcpy(s->y, y, n * sizeof *y);
    }
    p->series[p->nseries++] = s;
    return s;
}

plot_series_t *plot_panel_line(plot_panel_t *p, const double *x, const double *y, size_t n,
                               plot_color_t c, const char *label)
{
    return s_add(p, K_LINE, x, y, n, c, label);
}

plot_series_t *plot_panel_markers(plot_panel_t *p, const double *x, const double *y, size_t n,
                                  plot_color_t c, const char *label)
{
    return s_add(p, K_MARKERS, x, y, n, c, label);
}

plot_series_t *plot_panel_line_markers(plot_panel_t *p, const double *x, const double *y, size_t n,
                                       plot_color_t c, const char *label)
{
    return s_add(p, K_LINE | K_MARKERS, x, y, n, c, label);
}

plot_series_t *plot_panel_bars(plot_panel_t *p, const double *x, const double *y, size_t n,
                               plot_color_t c, const char *label)
{
    return s_add(p, K_BARS, x, y, n, c, label);
}

void plot_series_width(plot_series_t *s, double width)
{
    if (s && width > 0)
        s->width = width;
}

void plot_series_alpha(plot_series_t *s, double alpha)
{
    if (s)
        s->alpha = alpha < 0 ? 0 : alpha > 1 ? 1 : alpha;
}

void plot_series_dashed(plot_series_t *s, int dashed)
{
    if (s)
        s->dashed = dashed;
}

void plot_series_values(plot_series_t *s, const char *fmt)
{
    if (s)
        s_set_str(&s->value_fmt, fmt);
}

void plot_series_colors(plot_series_t *s, const plot_color_t *colors)
{
    if (!s)
        return;
    free(s->colors);
    s->colors = NULL;
    if (!colors || !s->n)
        return;
    s->colors = malloc(s->n * sizeof *s->colors);
    if (s->colors)
        memcpy(s->colors, colors, s->n * sizeof *colors);
}

/* ---- axes ----------------------------------------------------------------- */

/* A step of 1, 2 or 5 x 10^k giving about target intervals over range. */
static double s_nice_step(double range, double target, int integer)
{
    double raw = range / (target > 1 ? target : 1);
    if (!(raw > 0) || !isfinite(raw))
        return 1.0;
    double mag = pow(10.0, floor(log10(raw)));
    double f = raw / mag;
    double nice = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    double step = nice * mag;
    if (integer && step < 1)
        step = 1;
    return step;
}

static double s_tick_first(const s_axis_t *a)
{
    return ceil(a->lo / a->step - 1e-9) * a->step;
}

static int s_tick_count(const s_axis_t *a)
{
    double first = s_tick_first(a);
    int n = (int)floor((a->hi - first) / a->step + 1e-9) + 1;
    return n < 0 ? 0 : n > 200 ? 200 : n;
}

static double s_tick(const s_axis_t *a, int k)
{
    double v = s_tick_first(a) + k * a->step;
    return fabs(v) < a->step * 1e-9 ? 0.0 : v;
}

static void s_tick_label(char *buf, size_t len, const s_axis_t *a, double v, const char *fmt)
{
    if (fmt) {
        s_format(buf, len, fmt, v);
        return;
    }
    int dec = a->step >= 1 ? 0 : (int)ceil(-log10(a->step) - 1e-9);
    if (fabs(v) >= 1e7 || dec > 8)
        snprintf(buf, len, "%g", v);
    else
        snprintf(buf, len, "%.*f", dec, v);
}

/* Data extent of the panel: x and y of every finite point; bars reach 0. */
static int s_extent(const plot_panel_t *p, double *x0, double *x1, double *y0, double *y1,
                    double *min_dx)
{
    int any = 0;
    *min_dx = INFINITY;
    for (int i = 0; i < p->nseries; i++) {
        const plot_series_t *s = p->series[i];
        double prev = NAN;
        for (size_t j = 0; j < s->n; j++) {
            double x = s->x[j], y = s->y[j];
            if (!isfinite(x) || !isfinite(y))
                continue;
            if (!any) {
                *x0 = *x1 = x;
                *y0 = *y1 = y;
                any = 1;
            }
            if (x < *x0)
                *x0 = x;
            if (x > *x1)
                *x1 = x;
            if (y < *y0)
                *y0 = y;
            if (y > *y1)
                *y1 = y;
            if (s->kind & K_BARS) {
                if (0 < *y0)
                    *y0 = 0;
                if (0 > *y1)
                    *y1 = 0;
            }
            if (isfinite(prev) && fabs(x - prev) > 0 && fabs(x - prev) < *min_dx)
                *min_dx = fabs(x - prev);
            prev = x;
        }
    }
    if (!isfinite(*min_dx))
        *min_dx = 1.0;
    return any;
}

static int s_has_kind(const plot_panel_t *p, int kind)
{
    for (int i = 0; i < p->nseries; i++)
        if (p->series[i]->kind & kind)
            return 1;
    return 0;
}

static int s_has_values(const plot_panel_t *p)
{
    for (int i = 0; i < p->nseries; i++)
        if (p->series[i]->value_fmt)
            return 1;
    return 0;
}

static double s_px(const plot_panel_t *p, double x)
{
    return p->ax + (x - p->xa.lo) / (p->xa.hi - p->xa.lo) * p->aw;
}

static double s_py(const plot_panel_t *p, double y)
{
    return p->ay + p->ah - (y - p->ya.lo) / (p->ya.hi - p->ya.lo) * p->ah;
}

/* Fits the y axis to [lo, hi], rounded out to whole ticks. */
static void s_fit_y(plot_panel_t *p, double lo, double hi)
{
    if (p->yfixed) {
        p->ya.lo = p->fy0;
        p->ya.hi = p->fy1;
        p->ya.step = s_nice_step(p->ya.hi - p->ya.lo, p->ah / 55.0, 0);
        return;
    }
    if (!(hi > lo)) {
        double d = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1.0;
        lo -= d;
        hi += d;
    }
    double step = s_nice_step(hi - lo, p->ah / 60.0, 0);
    p->ya.step = step;
    p->ya.lo = floor(lo / step + 1e-9) * step;
    p->ya.hi = ceil(hi / step - 1e-9) * step;
    /* Markers, bars and value labels that meet the frame get cut or read
     * as cut: give them a little room, but keep a bar's zero baseline. */
    if (s_has_kind(p, K_MARKERS | K_BARS) || s_has_values(p)) {
        double r = p->ya.hi - p->ya.lo;
        if (p->ya.hi - hi < (s_has_values(p) ? 0.08 : 0.04) * r)
            p->ya.hi += step;
        if (lo - p->ya.lo < 0.04 * r && !(lo >= 0 && p->ya.lo == 0 && s_has_kind(p, K_BARS)))
            p->ya.lo -= step;
    }
    if (p->ybounded) {
        if (p->ya.lo < p->yb0 && lo >= p->yb0)
            p->ya.lo = p->yb0;
        if (p->ya.hi > p->yb1 && hi <= p->yb1)
            p->ya.hi = p->yb1;
    }
}

static void s_fit_x(plot_panel_t *p, double lo, double hi, double min_dx)
{
    if (p->ncats > 0) {
        p->xa.lo = 0.5;
        p->xa.hi = p->ncats + 0.5;
        p->xa.step = 1;
        return;
    }
    if (p->xfixed) {
        p->xa.lo = p->fx0;
        p->xa.hi = p->fx1;
    } else {
        if (s_has_kind(p, K_BARS)) {
            lo -= 0.5 * min_dx;
            hi += 0.5 * min_dx;
        } else if (s_has_kind(p, K_MARKERS)) {
            double pad = hi > lo ? 0.06 * (hi - lo) : 0.5;
            if (p->xinteger && pad < 0.3)
                pad = 0.3;
            lo -= pad;
            hi += pad;
        }
        if (!(hi > lo)) {
            lo -= 1;
            hi += 1;
        }
        p->xa.lo = lo;
        p->xa.hi = hi;
    }
    p->xa.step = s_nice_step(p->xa.hi - p->xa.lo, p->aw / 110.0, p->xinteger);
}

/* ---- legend placement ---------------------------------------------------- */

typedef struct {
    double x, y, w, h;
} s_rect_t;

static int s_in(const s_rect_t *r, double x, double y)
{
    return x >= r->x && x <= r->x + r->w && y >= r->y && y <= r->y + r->h;
}

static double s_overlap(const s_rect_t *a, const s_rect_t *b)
{
    double w = fmin(a->x + a->w, b->x + b->w) - fmax(a->x, b->x);
    double h = fmin(a->y + a->h, b->y + b->h) - fmax(a->y, b->y);
    return w > 0 && h > 0 ? w * h : 0;
}

static double s_marker_radius(const plot_series_t *s)
{
    return fmax(3.5, s->width * 2.0);
}

/* The rectangle of a bar in pixels. */
static s_rect_t s_bar_rect(const plot_panel_t *p, const plot_series_t *s, size_t j)
{
    double xc = s->x[j] - p->bar_group / 2 + (s->bar_slot + 0.5) * p->bar_w;
    double x0 = s_px(p, xc - p->bar_w / 2 * 0.92), x1 = s_px(p, xc + p->bar_w / 2 * 0.92);
    double y0 = s_py(p, 0 > p->ya.lo ? 0 : p->ya.lo), y1 = s_py(p, s->y[j]);
    s_rect_t r = {x0, fmin(y0, y1), x1 - x0, fabs(y1 - y0)};
    return r;
}

/* Where point j's value label goes: above the point (or bar) if it fits in
 * the plot area, else below; kept inside horizontally. */
static s_rect_t s_value_rect(cairo_t *cr, const plot_panel_t *p, const plot_series_t *s, size_t j,
                             char *buf, size_t len)
{
    s_format(buf, len, s->value_fmt, s->y[j]);
    double w = s_text_width(cr, buf, FS_VALUE, 0) + 4, h = s_line_height(FS_VALUE);
    double cx, top, bottom;
    if (s->kind & K_BARS) {
        s_rect_t b = s_bar_rect(p, s, j);
        cx = b.x + b.w / 2;
        top = b.y;
        bottom = b.y + b.h;
    } else {
        cx = s_px(p, s->x[j]);
        double r = (s->kind & K_MARKERS) ? s_marker_radius(s) : 2;
        top = s_py(p, s->y[j]) - r;
        bottom = s_py(p, s->y[j]) + r;
    }
    s_rect_t rr = {cx - w / 2, top - 3 - h, w, h};
    if (rr.y < p->ay + 2)
        rr.y = (s->kind & K_BARS) ? top + 3 : bottom + 3;
    if (rr.x < p->ax + 2)
        rr.x = p->ax + 2;
    if (rr.x + rr.w > p->ax + p->aw - 2)
        rr.x = p->ax + p->aw - 2 - rr.w;
    return rr;
}

/* How much of the drawn data the rectangle r would hide. Also reports the
 * highest (smallest y) pixel any data reaches, for headroom. */
static double s_cover(cairo_t *cr, const plot_panel_t *p, const s_rect_t *r, double *top)
{
    double score = 0;
    char buf[64];
    *top = p->ay + p->ah;
    for (int i = 0; i < p->nseries; i++) {
        const plot_series_t *s = p->series[i];
        for (size_t j = 0; j < s->n; j++) {
            if (!isfinite(s->x[j]) || !isfinite(s->y[j]))
                continue;
            double px = s_px(p, s->x[j]), py = s_py(p, s->y[j]);
            int inside_x = px >= p->ax - 1 && px <= p->ax + p->aw + 1;
            if (s->kind & K_BARS) {
                s_rect_t b = s_bar_rect(p, s, j);
                score += s_overlap(r, &b) / 4.0;
                if (inside_x && b.y < *top)
                    *top = b.y;
            }
            if (s->kind & K_MARKERS) {
                double rad = s_marker_radius(s);
                s_rect_t m = {px - rad, py - rad, 2 * rad, 2 * rad};
                score += s_overlap(r, &m);
                if (inside_x && m.y < *top)
                    *top = m.y;
            }
            if (s->kind & K_LINE) {
                if (inside_x && py < *top)
                    *top = py;
                if (s_in(r, px, py))
                    score += 4;
                if (j + 1 < s->n && isfinite(s->x[j + 1]) && isfinite(s->y[j + 1])) {
                    double qx = s_px(p, s->x[j + 1]), qy = s_py(p, s->y[j + 1]);
                    double len = hypot(qx - px, qy - py);
                    int k = (int)(len / 3.0);
                    for (int t = 1; t < k && t < 2000; t++) {
                        double f = (double)t / k;
                        if (s_in(r, px + f * (qx - px), py + f * (qy - py)))
                            score += 4;
                    }
                }
            }
            if (s->value_fmt) {
                s_rect_t v = s_value_rect(cr, p, s, j, buf, sizeof buf);
                score += s_overlap(r, &v);
                if (inside_x && v.y < *top)
                    *top = v.y;
            }
        }
    }
    return score;
}

/* Measures the legend; lw = 0 when no series has a label. */
static void s_legend_size(cairo_t *cr, plot_panel_t *p)
{
    int n = 0;
    double maxw = 0;
    for (int i = 0; i < p->nseries; i++) {
        if (!p->series[i]->label)
            continue;
        n++;
        double w = s_text_width(cr, p->series[i]->label, FS_LEGEND, 0);
        if (w > maxw)
            maxw = w;
    }
    p->lw = 0;
    if (!n)
        return;
    double rowh = s_line_height(FS_LEGEND) + 3;
    int rows_fit = (int)((p->ah * 0.55 - 12) / rowh);
    if (rows_fit < 1)
        rows_fit = 1;
    p->lcols = (n + rows_fit - 1) / rows_fit;
    p->lrows = (n + p->lcols - 1) / p->lcols;
    p->lcolw = 26 + 6 + maxw + 12;
    p->lw = p->lcols * p->lcolw + 10 - 12;
    p->lh = p->lrows * rowh + 10;
}

/* Places the legend: the least covered of six spots; when all cover data
 * and the y axis is free, raise its top until the top corners are clear. */
static void s_place_legend(cairo_t *cr, plot_panel_t *p, double data_y0, double data_y1)
{
    s_legend_size(cr, p);
    if (p->lw <= 0)
        return;
    for (int iter = 0; iter < 6; iter++) {
        double in = LEGEND_INSET;
        double xs[3] = {p->ax + p->aw - in - p->lw, p->ax + in, p->ax + (p->aw - p->lw) / 2};
        double ys[2] = {p->ay + in, p->ay + p->ah - in - p->lh};
        double best = INFINITY, top = 0;
        for (int yi = 0; yi < 2; yi++) {
            for (int xi = 0; xi < 3; xi++) {
                s_rect_t r = {xs[xi] - 6, ys[yi] - 6, p->lw + 12, p->lh + 12};
                double t, sc = s_cover(cr, p, &r, &t);
                if (xi == 2)
                    sc += 0.5; /* prefer corners on a tie */
                if (sc < best) {
                    best = sc;
                    p->lx = xs[xi];
                    p->ly = ys[yi];
                }
                top = t;
            }
        }
        if (best < 1 || p->yfixed)
            return;
        /* Make room: data must end below the legend's bottom edge. */
        double need = in + p->lh + 8;
        double have = top - p->ay;
        if (have >= need) /* already clear; the overlap is elsewhere */
            return;
        double frac = (p->ah - need) / (p->ah - have);
        if (!(frac > 0.2))
            return;
        double hi = p->ya.lo + (p->ya.hi - p->ya.lo) / frac;
        s_fit_y(p, data_y0, hi > data_y1 ? hi : data_y1);
    }
}

/* ---- drawing ----------------------------------------------------------- */

static void s_color(cairo_t *cr, plot_color_t c, double alpha)
{
    cairo_set_source_rgba(cr, c.r, c.g, c.b, alpha);
}

static void s_marker(cairo_t *cr, double x, double y, double r, plot_color_t c, double alpha)
{
    cairo_new_path(cr);
    cairo_arc(cr, x, y, r, 0, 2 * M_PI);
    s_color(cr, c, alpha);
    cairo_fill_preserve(cr);
    cairo_set_source_rgba(cr, 1, 1, 1, alpha);
    cairo_set_line_width(cr, 1.2);
    cairo_stroke(cr);
}

static void s_draw_series(cairo_t *cr, const plot_panel_t *p, const plot_series_t *s)
{
    if (s->kind & K_BARS) {
        for (size_t j = 0; j < s->n; j++) {
            if (!isfinite(s->x[j]) || !isfinite(s->y[j]))
                continue;
            s_rect_t b = s_bar_rect(p, s, j);
            cairo_rectangle(cr, b.x, b.y, b.w, b.h);
            s_color(cr, s->colors ? s->colors[j] : s->color, s->alpha * 0.9);
            cairo_fill(cr);
        }
    }
    if (s->kind & K_LINE) {
        cairo_new_path(cr);
        int pen = 0, finite = 0;
        size_t last = 0;
        for (size_t j = 0; j < s->n; j++) {
            if (!isfinite(s->x[j]) || !isfinite(s->y[j])) {
                pen = 0;
                continue;
            }
            double x = s_px(p, s->x[j]), y = s_py(p, s->y[j]);
            finite++;
            last = j;
            if (pen)
                cairo_line_to(cr, x, y);
            else
                cairo_move_to(cr, x, y);
            pen = 1;
        }
        s_color(cr, s->color, s->alpha);
        cairo_set_line_width(cr, s->width);
        cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
        cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
        if (s->dashed) {
            double d[2] = {7, 4};
            cairo_set_dash(cr, d, 2, 0);
        }
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        /* A line through one point draws nothing; show the point. */
        if (finite == 1 && !(s->kind & K_MARKERS)) {
            cairo_arc(cr, s_px(p, s->x[last]), s_py(p, s->y[last]), s->width + 1.5, 0, 2 * M_PI);
            s_color(cr, s->color, s->alpha);
            cairo_fill(cr);
        }
    }
    if (s->kind & K_MARKERS) {
        for (size_t j = 0; j < s->n; j++) {
            if (!isfinite(s->x[j]) || !isfinite(s->y[j]))
                continue;
            s_marker(cr, s_px(p, s->x[j]), s_py(p, s->y[j]), s_marker_radius(s),
                     s->colors ? s->colors[j] : s->color, s->alpha);
        }
    }
}

static void s_draw_values(cairo_t *cr, const plot_panel_t *p, const plot_series_t *s)
{
    char buf[64];
    for (size_t j = 0; j < s->n; j++) {
        if (!isfinite(s->x[j]) || !isfinite(s->y[j]))
            continue;
        s_rect_t r = s_value_rect(cr, p, s, j, buf, sizeof buf);
        cairo_set_source_rgba(cr, 1, 1, 1, 0.75);
        cairo_rectangle(cr, r.x, r.y + 1, r.w, r.h - 2);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
        s_text(cr, r.x + r.w / 2, r.y, buf, FS_VALUE, 0, 0.5, 0);
    }
}

static void s_draw_legend(cairo_t *cr, const plot_panel_t *p)
{
    if (p->lw <= 0)
        return;
    cairo_rectangle(cr, p->lx + 0.5, p->ly + 0.5, p->lw, p->lh);
    cairo_set_source_rgba(cr, 1, 1, 1, 0.92);
    cairo_fill_preserve(cr);
    cairo_set_source_rgb(cr, 0.8, 0.8, 0.8);
    cairo_set_line_width(cr, 1);
    cairo_stroke(cr);
    double rowh = s_line_height(FS_LEGEND) + 3;
    int k = 0;
    for (int i = 0; i < p->nseries; i++) {
        const plot_series_t *s = p->series[i];
        if (!s->label)
            continue;
        int col = k / p->lrows, row = k % p->lrows;
        k++;
        double x = p->lx + 6 + col * p->lcolw, y = p->ly + 5 + row * rowh, cy = y + rowh / 2;
        if (s->kind & K_BARS) {
            cairo_rectangle(cr, x + 6, cy - 6, 14, 12);
            s_color(cr, s->color, s->alpha * 0.9);
            cairo_fill(cr);
        }
        if (s->kind & K_LINE) {
            cairo_move_to(cr, x, cy);
            cairo_line_to(cr, x + 26, cy);
            s_color(cr, s->color, fmax(s->alpha, 0.6));
            cairo_set_line_width(cr, fmax(s->width, 1.5));
            if (s->dashed) {
                double d[2] = {7, 4};
                cairo_set_dash(cr, d, 2, 0);
            }
            cairo_stroke(cr);
            cairo_set_dash(cr, NULL, 0, 0);
        }
        if (s->kind & K_MARKERS)
            s_marker(cr, x + 13, cy, s_marker_radius(s), s->color, 1);
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        s_text(cr, x + 32, cy, s->label, FS_LEGEND, 0, 0, 0.5);
    }
}

/* Axis labels and the panel title, around the laid-out plot area. */
static void s_draw_labels(cairo_t *cr, const plot_panel_t *p, double x, double y, double h)
{
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    if (p->xlabel)
        s_text(cr, p->ax + p->aw / 2, y + h - 6, p->xlabel, FS_LABEL, 0, 0.5, 1);
    if (p->ylabel) {
        cairo_save(cr);
        cairo_translate(cr, x + 8, p->ay + p->ah / 2);
        cairo_rotate(cr, -M_PI / 2);
        s_text(cr, 0, 0, p->ylabel, FS_LABEL, 0, 0.5, 0);
        cairo_restore(cr);
    }
    if (p->title)
        s_text(cr, p->ax + p->aw / 2, y + 8, p->title, FS_PTITLE, 1, 0.5, 0);
}

/* Lays out panel p in the box (x, y, w, h) of the figure: the plot area, the
 * bar widths, both axes and the legend. Whether p has data to draw. */
static int s_layout_panel(cairo_t *cr, plot_panel_t *p, double x, double y, double w, double h)
{
    double dx0 = 0, dx1 = 1, dy0 = 0, dy1 = 1, min_dx = 1;
    int any = s_extent(p, &dx0, &dx1, &dy0, &dy1, &min_dx);

    /* Vertical layout does not depend on the data. */
    double top = y + 8 + (p->title ? s_line_height(FS_PTITLE) + 8 : 4);
    double bottom =
        y + h - 8 - s_line_height(FS_TICK) - 6 - (p->xlabel ? s_line_height(FS_LABEL) + 4 : 0);
    p->ay = top;
    p->ah = bottom - top;
    p->ax = x;
    p->aw = w;

    /* Bars of several series sit side by side at each x. */
    p->nbars = 0;
    for (int i = 0; i < p->nseries; i++)
        if (p->series[i]->kind & K_BARS)
            p->series[i]->bar_slot = p->nbars++;
    p->bar_group = 0.8 * (p->ncats > 0 ? 1.0 : min_dx);
    p->bar_w = p->nbars ? p->bar_group / p->nbars : 0;

    /* The left margin depends on the y tick labels, which can change when
     * the legend asks for headroom: lay out, place, then lay out again. */
    char buf[64];
    s_fit_y(p, dy0, dy1);
    for (int pass = 0; pass < 2; pass++) {
        double tw = 0;
        for (int k = 0; k < s_tick_count(&p->ya); k++) {
            s_tick_label(buf, sizeof buf, &p->ya, s_tick(&p->ya, k), p->yfmt);
            double t = s_text_width(cr, buf, FS_TICK, 0);
            if (t > tw)
                tw = t;
        }
        double left = 10 + (p->ylabel ? s_line_height(FS_LABEL) + 6 : 0) + tw + 8;
        p->ax = x + left;
        p->aw = w - left - 16;
        s_fit_x(p, dx0, dx1, min_dx);
        if (pass == 0 && any)
            s_place_legend(cr, p, dy0, dy1);
    }
    if (any)
        s_place_legend(cr, p, dy0, dy1);
    return any;
}

/* The frame of p's plot area, on whole pixels; leaves its colour set. */
static void s_draw_frame(cairo_t *cr, const plot_panel_t *p)
{
    cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, round(p->ax) + 0.5, round(p->ay) + 0.5, round(p->aw), round(p->ah));
    cairo_stroke(cr);
}

/* The frame of p's plot area, and its ticks and tick labels. */
static void s_draw_axes(cairo_t *cr, plot_panel_t *p)
{
    char buf[64];
    s_draw_frame(cr, p);
    for (int k = 0; k < s_tick_count(&p->ya); k++) {
        double v = s_tick(&p->ya, k), py = round(s_py(p, v)) + 0.5;
        cairo_move_to(cr, p->ax - 4, py);
        cairo_line_to(cr, p->ax, py);
        cairo_stroke(cr);
        s_tick_label(buf, sizeof buf, &p->ya, v, p->yfmt);
        s_text(cr, p->ax - 7, py, buf, FS_TICK, 0, 1, 0.5);
    }
    double xt = p->ay + p->ah + 5;
    if (p->ncats > 0) {
        for (int c = 0; c < p->ncats; c++) {
            double px = s_px(p, c + 1);
            s_text(cr, px, xt, p->cats[c], FS_TICK + 0.5, 0, 0.5, 0);
        }
    } else {
        for (int k = 0; k < s_tick_count(&p->xa); k++) {
            double v = s_tick(&p->xa, k), px = round(s_px(p, v)) + 0.5;
            cairo_move_to(cr, px, p->ay + p->ah);
            cairo_line_to(cr, px, p->ay + p->ah + 4);
            cairo_stroke(cr);
            s_tick_label(buf, sizeof buf, &p->xa, v, NULL);
            s_text(cr, px, xt, buf, FS_TICK, 0, 0.5, 0);
        }
    }
}

/* Lays out and draws panel p into the box (x, y, w, h) of the figure. */
static void s_draw_panel(cairo_t *cr, plot_panel_t *p, double x, double y, double w, double h)
{
    int any = s_layout_panel(cr, p, x, y, w, h);
    if (!any) {
        /* Just the frame, the labels and the reason: ticks on an axis
         * with nothing to measure would be invented numbers. */
        s_draw_frame(cr, p);
        s_draw_labels(cr, p, x, y, h);
        cairo_set_source_rgb(cr, 0.45, 0.45, 0.45);
        s_text(cr, p->ax + p->aw / 2, p->ay + p->ah / 2, p->empty_text ? p->empty_text : "no data",
               FS_LABEL, 0, 0.5, 0.5);
        return;
    }

    /* Grid. */
    cairo_set_line_width(cr, 1);
    cairo_set_source_rgb(cr, 0.90, 0.90, 0.90);
    for (int k = 0; k < s_tick_count(&p->ya); k++) {
        double py = round(s_py(p, s_tick(&p->ya, k))) + 0.5;
        cairo_move_to(cr, p->ax, py);
        cairo_line_to(cr, p->ax + p->aw, py);
    }
    for (int k = 0; k < s_tick_count(&p->xa); k++) {
        double px = round(s_px(p, s_tick(&p->xa, k))) + 0.5;
        cairo_move_to(cr, px, p->ay);
        cairo_line_to(cr, px, p->ay + p->ah);
    }
    cairo_stroke(cr);

    /* Data, clipped to the plot area. */
    cairo_save(cr);
    cairo_rectangle(cr, p->ax, p->ay, p->aw, p->ah);
    cairo_clip(cr);
    for (int i = 0; i < p->nseries; i++)
        s_draw_series(cr, p, p->series[i]);
    for (int i = 0; i < p->nseries; i++)
        if (p->series[i]->value_fmt)
            s_draw_values(cr, p, p->series[i]);
    cairo_restore(cr);

    s_draw_axes(cr, p);
    s_draw_labels(cr, p, x, y, h);
    s_draw_legend(cr, p);
}

/* Draws the whole figure on a new image surface; NULL on failure. */
static cairo_surface_t *s_render(plot_fig_t *f)
{
    cairo_surface_t *sf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, f->width, f->height);
    if (cairo_surface_status(sf) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(sf);
        return NULL;
    }
    cairo_t *cr = cairo_create(sf);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);

    double top = 6;
    if (f->title) {
        /* First line large and bold, the rest smaller, in grey. */
        const char *line = f->title;
        int first = 1;
        while (line && *line) {
            const char *nl = strchr(line, '\n');
            size_t len = nl ? (size_t)(nl - line) : strlen(line);
            char buf[512];
            if (len >= sizeof buf)
                len = sizeof buf - 1;
            memcpy(buf, line, len);
            buf[len] = '\0';
            double fs = first ? FS_TITLE : FS_SUBTITLE;
            if (first)
                cairo_set_source_rgb(cr, 0.05, 0.05, 0.05);
            else
                cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
            s_text(cr, f->width / 2.0, top + 4, buf, fs, first, 0.5, 0);
            top += s_line_height(fs) + 2;
            first = 0;
            line = nl ? nl + 1 : NULL;
        }
        top += 8;
    }
    double pw = (f->width - 20.0) / f->npanels;
    for (int i = 0; i < f->npanels; i++)
        s_draw_panel(cr, &f->panels[i], 10 + i * pw, top, pw, f->height - top - 4);
    cairo_destroy(cr);
    cairo_surface_flush(sf);
    return sf;
}

/* ---- PNG -------------------------------------------------------------------- */

/* Writes the surface through libpng as 8-bit RGBA, undoing cairo's
 * premultiplied, native-endian ARGB32. */
static int s_write_png(cairo_surface_t *sf, const plot_fig_t *f, FILE *fp, char *err, size_t errlen)
{
    int w = cairo_image_surface_get_width(sf), h = cairo_image_surface_get_height(sf);
    int stride = cairo_image_surface_get_stride(sf);
    const unsigned char *data = cairo_image_surface_get_data(sf);
    unsigned char *row = malloc((size_t)w * 4);
    if (!data || !row) {
        free(row);
        errmsg_set(err, errlen, "out of memory");
        return -1;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        free(row);
        errmsg_set(err, errlen, "libpng: cannot create write structures");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(row);
        errmsg_set(err, errlen, "libpng: write failed");
        return -1;
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB_ALPHA,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    /* The text as iTXt chunks (UTF-8, uncompressed), written before the
     * image data so that a reader finds them without inflating it. */
    png_text text[PLOT_MAX_TEXT];
    for (int i = 0; i < f->ntext; i++) {
        memset(&text[i], 0, sizeof text[i]);
        text[i].compression = PNG_ITXT_COMPRESSION_NONE;
        text[i].key = f->text[i][0];
        text[i].text = f->text[i][1];
        text[i].itxt_length = strlen(f->text[i][1]);
        text[i].lang = "";
        text[i].lang_key = "";
    }
    if (f->ntext > 0)
        png_set_text(png, info, text, f->ntext);
    png_write_info(png, info);
    for (int yy = 0; yy < h; yy++) {
        const uint32_t *src = (const uint32_t *)(const void *)(data + (size_t)yy * stride);
        for (int xx = 0; xx < w; xx++) {
            uint32_t px = src[xx];
            unsigned a = px >> 24, r = (px >> 16) & 0xff, g = (px >> 8) & 0xff, b = px & 0xff;
            if (a && a < 255) {
                r = (r * 255 + a / 2) / a;
                g = (g * 255 + a / 2) / a;
                b = (b * 255 + a / 2) / a;
            }
            unsigned char *d = row + 4 * xx;
            d[0] = (unsigned char)r;
            d[1] = (unsigned char)g;
            d[2] = (unsigned char)b;
            d[3] = (unsigned char)a;
        }
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(row);
    return 0;
}

int plot_fig_write_png(plot_fig_t *f, const char *path, char *err, size_t errlen)
{
    if (!f || !path) {
        errmsg_set(err, errlen, "no figure or path");
        return -1;
    }
    cairo_surface_t *sf = s_render(f);
    if (!sf) {
        errmsg_set(err, errlen, "cannot create a %dx%d image", f->width, f->height);
        return -1;
    }
    atomicfile_t af;
    FILE *fp = atomicfile_open(&af, path, err, errlen);
    if (!fp) {
        cairo_surface_destroy(sf);
        return -1;
    }
    int rc = s_write_png(sf, f, fp, err, errlen);
    cairo_surface_destroy(sf);
    if (rc != 0) {
        atomicfile_abort(&af);
        return -1;
    }
    return atomicfile_commit(&af, err, errlen);
}

int plot_fig_layout(plot_fig_t *f, int i, plot_layout_t *out)
{
    if (!f || i < 0 || i >= f->npanels || !out)
        return -1;
    cairo_surface_t *sf = s_render(f);
    if (!sf)
        return -1;
    cairo_surface_destroy(sf);
    const plot_panel_t *p = &f->panels[i];
    *out = (plot_layout_t){
        .x_lo = p->xa.lo,
        .x_hi = p->xa.hi,
        .x_step = p->xa.step,
        .nxticks = s_tick_count(&p->xa),
        .y_lo = p->ya.lo,
        .y_hi = p->ya.hi,
        .y_step = p->ya.step,
        .nyticks = s_tick_count(&p->ya),
        .area_x = p->ax,
        .area_y = p->ay,
        .area_w = p->aw,
        .area_h = p->ah,
        .legend = p->lw > 0,
        .legend_x = p->lx,
        .legend_y = p->ly,
        .legend_w = p->lw,
        .legend_h = p->lh,
    };
    return 0;
}
