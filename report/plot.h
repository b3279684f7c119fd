/* plot: a small charting module on cairo for the report tool. A figure is a
 * row of panels side by side under an optional title; each panel has axes
 * with "nice" ticks (1, 2 or 5 x 10^k), axis labels, a title, a light grey
 * grid, and any number of series: lines, markers, lines with markers, or
 * bars (bar series in one panel are grouped side by side at each x). Series
 * with a label get a legend entry; the legend goes in the panel corner where
 * it covers the least data, and when every corner covers some, the y axis
 * gets headroom so that it covers none. The figure is written as PNG through
 * libpng (cairo only draws).
 *
 * Ownership: the figure owns its panels and series; every add function
 * copies the data and strings it is given, so callers may free theirs at
 * once. Panel and series handles stay valid until plot_fig_destroy. Not
 * thread-safe: one thread owns a figure.
 *
 * Text given with plot_fig_text goes into the PNG as iTXt chunks, so that a
 * plot found alone says where it came from (exiftool, `identify -verbose`
 * or any PNG reader shows them). */
#ifndef PLOT_H
#define PLOT_H

#include <stddef.h>

typedef struct plot_fig plot_fig_t;
typedef struct plot_panel plot_panel_t;
typedef struct plot_series plot_series_t;

/* A colour with components in [0, 1]. */
typedef struct {
    double r, g, b;
} plot_color_t;

/* Colour i of a ten-colour qualitative palette (wraps around). */
plot_color_t plot_palette(int i);

/* A figure of width x height pixels with npanels panels (1..8) side by side.
 * title may be NULL or contain '\n' for a second (smaller) line. NULL on
 * failure. */
plot_fig_t *plot_fig_new(int width, int height, int npanels, const char *title);

/* Replaces the figure title (NULL for none). */
void plot_fig_title(plot_fig_t *f, const char *title);

/* Frees the figure, its panels and series, and sets *pf to NULL; safe on
 * NULL. */
void plot_fig_destroy(plot_fig_t **pf);

/* Sets a text entry (PNG keyword, UTF-8 value) written into the PNG as an
 * iTXt chunk; setting a keyword again replaces its value. A keyword is 1-79
 * printable ASCII characters without leading, trailing or double spaces.
 * 0, or -1 with a message in err (bad keyword, more than 32 entries). */
int plot_fig_text(plot_fig_t *f, const char *key, const char *value, char *err, size_t errlen);

/* Panel i (0-based, left to right); owned by the figure. */
plot_panel_t *plot_fig_panel(plot_fig_t *f, int i);

/* Draws the figure and writes it to path as an 8-bit RGBA PNG with the text
 * entries, through atomicfile (a reader never sees half a file). 0, or -1
 * with a message in err. */
int plot_fig_write_png(plot_fig_t *f, const char *path, char *err, size_t errlen);

/* How a panel was laid out: axis ranges and tick steps in data units, the
 * plot area and the legend box in pixels of the image. */
typedef struct {
    double x_lo, x_hi, x_step, y_lo, y_hi, y_step;
    int nxticks, nyticks; /* ticks drawn on each axis */
    double area_x, area_y, area_w, area_h;
    int legend; /* 0 when no series has a label */
    double legend_x, legend_y, legend_w, legend_h;
} plot_layout_t;

/* Lays the figure out as plot_fig_write_png would and reports panel i's
 * layout (for tests, and for callers that annotate the image). 0 or -1. */
int plot_fig_layout(plot_fig_t *f, int i, plot_layout_t *out);

/* Panel title and axis labels; any may be NULL. */
void plot_panel_title(plot_panel_t *p, const char *title);
void plot_panel_labels(plot_panel_t *p, const char *xlabel, const char *ylabel);

/* Fixes an axis range instead of fitting it to the data (lo < hi). */
void plot_panel_xrange(plot_panel_t *p, double lo, double hi);
void plot_panel_yrange(plot_panel_t *p, double lo, double hi);

/* Bounds for an automatically fitted y axis: it may stop short of them
 * but never passes them (a percentage axis need not show 110%). */
void plot_panel_ybounds(plot_panel_t *p, double lo, double hi);

/* Keeps x ticks on whole numbers (epochs, counts). */
void plot_panel_xinteger(plot_panel_t *p);

/* Makes the x axis categorical: ticks at x = 1..n labelled names[0..n-1]
 * instead of numbers. */
void plot_panel_xcategories(plot_panel_t *p, const char *const *names, int n);

/* Format (printf, one double) for the y tick labels, for example "%.1f%%";
 * NULL restores the automatic format. */
void plot_panel_yformat(plot_panel_t *p, const char *fmt);

/* Text shown in the middle of a panel that has no series, e.g. "no epochs
 * recorded yet". */
void plot_panel_empty_text(plot_panel_t *p, const char *text);

/* Adds a series of n points (x[i], y[i]); NaN y values break a line. label
 * NULL leaves it out of the legend. NULL on failure. */
plot_series_t *plot_panel_line(plot_panel_t *p, const double *x, const double *y, size_t n,
                               plot_color_t c, const char *label);
plot_series_t *plot_panel_markers(plot_panel_t *p, const double *x, const double *y, size_t n,
                                  plot_color_t c, const char *label);
plot_series_t *plot_panel_line_markers(plot_panel_t *p, const double *x, const double *y, size_t n,
                                       plot_color_t c, const char *label);
plot_series_t *plot_panel_bars(plot_panel_t *p, const double *x, const double *y, size_t n,
                               plot_color_t c, const char *label);

/* Line width in pixels (default 2; markers are sized from it). */
void plot_series_width(plot_series_t *s, double width);

/* Opacity in [0, 1] (default 1). */
void plot_series_alpha(plot_series_t *s, double alpha);

/* Draws a dashed line. */
void plot_series_dashed(plot_series_t *s, int dashed);

/* Labels each point (or bar) with its y value printed with fmt (printf, one
 * double), e.g. "%.2f%%". NULL turns labels off. */
void plot_series_values(plot_series_t *s, const char *fmt);

/* Gives each point (bar) its own colour; colors has the series' n
 * entries. */
void plot_series_colors(plot_series_t *s, const plot_color_t *colors);

#endif
