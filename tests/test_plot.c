/* test_plot: the plot module's layout and output, without psreport.
 *
 * Layout (through plot_fig_layout): y ticks are 1, 2 or 5 x 10^k and the
 * axis is rounded out to whole ticks around the data; integer x axes keep
 * whole-number steps; fixed ranges, bounds and categories are obeyed; bars
 * reach zero; the legend never covers a data point, moving to a free corner
 * or making headroom when none is free. Output: the written PNG decodes,
 * its pixels are not uniform, a thick series shows its colour where its
 * points are, and the text entries are there as iTXt chunks with valid CRCs
 * before the image data. */
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "plot.h"

/* A step is nice when it is 1, 2 or 5 times a power of ten. */
static int s_nice(double step)
{
    double mag = pow(10.0, floor(log10(step) + 1e-9));
    double f = step / mag;
    return fabs(f - 1) < 1e-9 || fabs(f - 2) < 1e-9 || fabs(f - 5) < 1e-9;
}

/* v is a whole multiple of step. */
static int s_multiple(double v, double step)
{
    double k = v / step;
    return fabs(k - round(k)) < 1e-6;
}

static plot_layout_t s_layout(plot_fig_t *f, int panel)
{
    plot_layout_t l;
    assert_int_equal(plot_fig_layout(f, panel, &l), 0);
    return l;
}

/* Pixel position of (x, y) in a laid-out panel. */
static void s_pixel(const plot_layout_t *l, double x, double y, double *px, double *py)
{
    *px = l->area_x + (x - l->x_lo) / (l->x_hi - l->x_lo) * l->area_w;
    *py = l->area_y + l->area_h - (y - l->y_lo) / (l->y_hi - l->y_lo) * l->area_h;
}

static void test_y_ticks_round_out(void **state)
{
    (void)state;
    static const double ranges[][2] = {{0.13, 0.87}, {2.2, 2.3}, {-17, 240},
                                       {1e-4, 3e-4}, {95, 99.5}, {1234, 98765}};
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        plot_fig_t *f = plot_fig_new(600, 400, 1, NULL);
        assert_non_null(f);
        double x[2] = {0, 1}, y[2] = {ranges[i][0], ranges[i][1]};
        assert_non_null(plot_panel_line(plot_fig_panel(f, 0), x, y, 2, plot_palette(0), NULL));
        plot_layout_t l = s_layout(f, 0);
        if (!s_nice(l.y_step) || !s_multiple(l.y_lo, l.y_step) || !s_multiple(l.y_hi, l.y_step))
            fail_msg("data %g..%g: axis %g..%g step %g is not nice", y[0], y[1], l.y_lo, l.y_hi,
                     l.y_step);
        if (!(l.y_lo <= y[0] && l.y_hi >= y[1]))
            fail_msg("data %g..%g: axis %g..%g cuts it", y[0], y[1], l.y_lo, l.y_hi);
        /* Rounded out by less than a step on each side, 3 to 12 ticks. */
        assert_true(y[0] - l.y_lo < l.y_step + 1e-9 && l.y_hi - y[1] < l.y_step + 1e-9);
        if (l.nyticks < 3 || l.nyticks > 12)
            fail_msg("data %g..%g: %d ticks", y[0], y[1], l.nyticks);
        assert_true(l.x_lo == 0 && l.x_hi == 1); /* lines: x tight */
        plot_fig_destroy(&f);
    }
}

static void test_x_axis(void **state)
{
    (void)state;
    plot_fig_t *f = plot_fig_new(900, 400, 3, NULL);
    assert_non_null(f);
    double x[3] = {1, 2, 3}, y[3] = {10, 20, 15};

    /* Integer x with markers: whole steps, padded so markers are not cut. */
    plot_panel_t *p = plot_fig_panel(f, 0);
    plot_panel_xinteger(p);
    plot_panel_markers(p, x, y, 3, plot_palette(0), NULL);

    /* A fixed range and fixed y. */
    p = plot_fig_panel(f, 1);
    plot_panel_xrange(p, -5, 25);
    plot_panel_yrange(p, 0, 50);
    plot_panel_line(p, x, y, 3, plot_palette(1), NULL);

    /* Categories: ticks at 1..n, range 0.5..n+0.5; bars reach zero. */
    p = plot_fig_panel(f, 2);
    const char *names[3] = {"a", "b", "c"};
    plot_panel_xcategories(p, names, 3);
    plot_panel_bars(p, x, y, 3, plot_palette(2), NULL);

    plot_layout_t l = s_layout(f, 0);
    assert_true(l.x_step >= 1 && s_multiple(l.x_step, 1));
    assert_true(l.x_lo < 1 && l.x_hi > 3 && l.x_lo > 0 && l.x_hi < 4);
    l = s_layout(f, 1);
    assert_true(l.x_lo == -5 && l.x_hi == 25 && l.y_lo == 0 && l.y_hi == 50);
    l = s_layout(f, 2);
    assert_true(l.x_lo == 0.5 && l.x_hi == 3.5);
    assert_true(l.y_lo <= 0 && l.y_lo > -l.y_step - 1e-9 && l.y_hi >= 20);
    plot_fig_destroy(&f);
}

/* A percentage axis stops at its bound, even with markers that would want
 * room above the data. */
static void test_y_bounds(void **state)
{
    (void)state;
    plot_fig_t *f = plot_fig_new(600, 400, 1, NULL);
    assert_non_null(f);
    double x[3] = {1, 2, 3}, y[3] = {97, 98.9, 99.95};
    plot_panel_t *p = plot_fig_panel(f, 0);
    plot_panel_ybounds(p, 0, 100);
    plot_series_values(plot_panel_line_markers(p, x, y, 3, plot_palette(0), NULL), "%.2f%%");
    plot_layout_t l = s_layout(f, 0);
    if (!(l.y_hi <= 100 && l.y_hi >= 99.95 && l.y_lo <= 97))
        fail_msg("axis %g..%g for data 97..99.95 bounded by 0..100", l.y_lo, l.y_hi);
    plot_fig_destroy(&f);
}

/* No data marker (radius 4 pixels at the default width) reaches under the
 * legend box. */
static void s_assert_legend_clear(const plot_layout_t *l, const double *x, const double *y,
                                  size_t n)
{
    assert_true(l->legend);
    for (size_t i = 0; i < n; i++) {
        double px, py;
        s_pixel(l, x[i], y[i], &px, &py);
        if (px >= l->legend_x - 4 && px <= l->legend_x + l->legend_w + 4 && py >= l->legend_y - 4 &&
            py <= l->legend_y + l->legend_h + 4)
            fail_msg("point %zu (%g, %g) at pixel (%.0f, %.0f) is under the legend "
                     "(%.0f, %.0f, %.0f x %.0f)",
                     i, x[i], y[i], px, py, l->legend_x, l->legend_y, l->legend_w, l->legend_h);
    }
    /* And the legend is inside the plot area. */
    assert_true(l->legend_x >= l->area_x && l->legend_x + l->legend_w <= l->area_x + l->area_w);
    assert_true(l->legend_y >= l->area_y && l->legend_y + l->legend_h <= l->area_y + l->area_h);
}

static void test_legend_avoids_data(void **state)
{
    (void)state;
    enum { N = 200 };
    double x[N], rise[N], hill[N], valley[N];
    for (int i = 0; i < N; i++) {
        x[i] = i;
        rise[i] = i * i;                           /* low left, high right */
        valley[i] = (i - N / 2.0) * (i - N / 2.0); /* high at both ends, low in the middle */
        hill[i] = N * N / 4.0 - valley[i];         /* low at both ends, high in the middle */
    }
    /* A curve rising to the top right: the legend goes elsewhere, and
     * the top-right corner (where it goes by preference) is not used. */
    plot_fig_t *f = plot_fig_new(700, 450, 1, NULL);
    assert_non_null(f);
    plot_panel_markers(plot_fig_panel(f, 0), x, rise, N, plot_palette(0), "rising");
    plot_layout_t l = s_layout(f, 0);
    s_assert_legend_clear(&l, x, rise, N);
    assert_true(l.legend_x + l.legend_w < l.area_x + l.area_w * 0.9);
    plot_fig_destroy(&f);

    /* A valley and a hill cover all six places the legend may go: the y
     * axis gets headroom (past the data's own rounded maximum) and still no
     * point is covered. */
    f = plot_fig_new(700, 450, 1, NULL);
    assert_non_null(f);
    plot_panel_t *p = plot_fig_panel(f, 0);
    plot_panel_markers(p, x, valley, N, plot_palette(1), "valley");
    plot_panel_markers(p, x, hill, N, plot_palette(2), "hill");
    l = s_layout(f, 0);
    s_assert_legend_clear(&l, x, valley, N);
    s_assert_legend_clear(&l, x, hill, N);
    if (!(l.y_hi > N * N / 4.0 + l.y_step))
        fail_msg("no headroom: y axis ends at %g, step %g, data at %g", l.y_hi, l.y_step,
                 N * N / 4.0);
    plot_fig_destroy(&f);

    /* No labels, no legend. */
    f = plot_fig_new(700, 450, 1, NULL);
    assert_non_null(f);
    plot_panel_line(plot_fig_panel(f, 0), x, rise, N, plot_palette(0), NULL);
    l = s_layout(f, 0);
    assert_false(l.legend);
    plot_fig_destroy(&f);
}

/* The image, decoded by libpng: RGBA rows. */
static unsigned char *s_decode(const char *path, int *w, int *h)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path))
        fail_msg("%s: %s", path, img.message);
    img.format = PNG_FORMAT_RGBA;
    unsigned char *px = malloc(PNG_IMAGE_SIZE(img));
    assert_non_null(px);
    if (!png_image_finish_read(&img, NULL, px, 0, NULL))
        fail_msg("%s: %s", path, img.message);
    *w = (int)img.width;
    *h = (int)img.height;
    return px;
}

/* The iTXt chunks of a PNG file, checked: the signature, every chunk's CRC,
 * text before IDAT. Returns the value of key (malloc'd) or NULL. */
static char *s_png_text(const char *path, const char *key)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    static unsigned char buf[1 << 22];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    assert_true(n > 8 && n < sizeof buf);
    assert_memory_equal(buf, "\x89PNG\r\n\x1a\n", 8);
    char *found = NULL;
    int seen_idat = 0;
    for (size_t i = 8; i + 12 <= n;) {
        uint32_t len = (uint32_t)buf[i] << 24 | (uint32_t)buf[i + 1] << 16 |
                       (uint32_t)buf[i + 2] << 8 | buf[i + 3];
        assert_true(i + 12 + len <= n);
        const unsigned char *type = buf + i + 4, *data = buf + i + 8;
        uint32_t crc = (uint32_t)data[len] << 24 | (uint32_t)data[len + 1] << 16 |
                       (uint32_t)data[len + 2] << 8 | data[len + 3];
        assert_int_equal(crc, crc32(0, type, len + 4));
        if (!memcmp(type, "IDAT", 4))
            seen_idat = 1;
        /* iTXt: keyword NUL, compression flag, method, language NUL,
         * translated keyword NUL, text. */
        if (!memcmp(type, "iTXt", 4) && strlen((const char *)data) == strlen(key) &&
            !memcmp(data, key, strlen(key))) {
            assert_false(seen_idat);
            const unsigned char *p = data + strlen(key) + 1, *end = data + len;
            assert_int_equal(p[0], 0); /* not compressed */
            p += 2;
            p += strnlen((const char *)p, (size_t)(end - p)) + 1; /* language */
            p += strnlen((const char *)p, (size_t)(end - p)) + 1; /* translated keyword */
            assert_true(p <= end);
            found = strndup((const char *)p, (size_t)(end - p));
        }
        i += 12 + len;
    }
    return found;
}

static void test_png_pixels_and_text(void **state)
{
    (void)state;
    char path[] = "/tmp/test_plot.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);

    plot_fig_t *f = plot_fig_new(640, 420, 1, "A title\nand a second line");
    assert_non_null(f);
    double x[5] = {0, 1, 2, 3, 4}, y[5] = {0, 1, 2, 3, 4};
    plot_series_t *s =
        plot_panel_line(plot_fig_panel(f, 0), x, y, 5, (plot_color_t){1, 0, 0}, "red line");
    plot_series_width(s, 6);
    char err[256] = "";
    assert_int_equal(plot_fig_text(f, "run id", "42", err, sizeof err), 0);
    assert_int_equal(plot_fig_text(f, "final accuracy", "99.12%", err, sizeof err), 0);
    assert_int_equal(plot_fig_text(f, "Comment", "UTF-8: \xc3\xa9\xe2\x82\xac", err, sizeof err),
                     0);
    assert_int_equal(plot_fig_text(f, "run id", "43", err, sizeof err), 0); /* replaces */
    static const char *const bad_keys[] = {"",
                                           " lead",
                                           "trail ",
                                           "dou  ble",
                                           "caf\xc3\xa9",
                                           "0123456789012345678901234567890123456789"
                                           "0123456789012345678901234567890123456789"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
        err[0] = '\0';
        assert_int_equal(plot_fig_text(f, bad_keys[i], "v", err, sizeof err), -1);
        assert_non_null(strstr(err, "keyword"));
    }
    plot_layout_t l = s_layout(f, 0);
    assert_int_equal(plot_fig_write_png(f, path, err, sizeof err), 0);

    char *v = s_png_text(path, "run id");
    assert_non_null(v);
    assert_string_equal(v, "43");
    free(v);
    v = s_png_text(path, "final accuracy");
    assert_string_equal(v, "99.12%");
    free(v);
    v = s_png_text(path, "Comment");
    assert_string_equal(v, "UTF-8: \xc3\xa9\xe2\x82\xac");
    free(v);
    assert_null(s_png_text(path, "missing"));

    int w, h;
    unsigned char *px = s_decode(path, &w, &h);
    assert_int_equal(w, 640);
    assert_int_equal(h, 420);
    /* Not uniform: more than a few distinct colours, and mostly white. */
    int white = 0, differs = 0;
    for (int i = 0; i < w * h; i++) {
        const unsigned char *c = px + 4 * i;
        white += c[0] == 255 && c[1] == 255 && c[2] == 255;
        differs += memcmp(c, px, 4) != 0;
    }
    assert_true(white > w * h / 2 && differs > w * h / 100);
    /* The line's colour at its middle points, where the layout puts them. */
    for (int k = 1; k < 4; k++) {
        double fx, fy;
        s_pixel(&l, x[k], y[k], &fx, &fy);
        const unsigned char *c = px + 4 * ((int)lround(fy) * w + (int)lround(fx));
        if (!(c[0] > 200 && c[1] < 80 && c[2] < 80))
            fail_msg("point %d at (%.0f, %.0f) is (%d, %d, %d), not red", k, fx, fy, c[0], c[1],
                     c[2]);
    }
    free(px);
    plot_fig_destroy(&f);
    unlink(path);

    /* An unwritable path is an error naming it, and leaves nothing behind. */
    f = plot_fig_new(200, 200, 1, NULL);
    assert_non_null(f);
    assert_int_equal(plot_fig_write_png(f, "/nonexistent-dir/x.png", err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent-dir/x.png"));
    plot_fig_destroy(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_y_ticks_round_out),
        cmocka_unit_test(test_x_axis),
        cmocka_unit_test(test_y_bounds),
        cmocka_unit_test(test_legend_avoids_data),
        cmocka_unit_test(test_png_pixels_and_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
