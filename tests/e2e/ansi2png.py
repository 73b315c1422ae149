#!/usr/bin/python3
"""Renders a terminal capture (`tmux capture-pane -e -p`: text with SGR
colour sequences) into a PNG, cell by cell, with DejaVu Sans Mono glyphs
rasterized once each by ImageMagick and the PNG written with zlib.

usage: ansi2png.py CAPTURE.txt OUT.png [COLUMNS ROWS]
"""
import re
import struct
import subprocess
import sys
import zlib

CW, CH = 9, 18
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
FG, BG = (220, 220, 220), (28, 28, 32)
BASE16 = [(0, 0, 0), (205, 49, 49), (13, 188, 121), (229, 229, 16),
          (36, 114, 200), (188, 63, 188), (17, 168, 205), (229, 229, 229),
          (102, 102, 102), (241, 76, 76), (35, 209, 139), (245, 245, 67),
          (59, 142, 234), (214, 112, 214), (41, 184, 219), (255, 255, 255)]


def color256(n):
    if n < 16:
        return BASE16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    v = 8 + (n - 232) * 10
    return (v, v, v)


_glyphs = {}


def glyph(ch, bold):
    """Coverage of ch in a CWxCH cell: CW*CH bytes, 0..255."""
    key = (ch, bold)
    if key not in _glyphs:
        if ch == " ":
            _glyphs[key] = bytes(CW * CH)
        else:
            text = ch.replace("\\", "\\\\").replace("%", "%%")
            if text.startswith("@"):
                text = "\\" + text
            r = subprocess.run(
                ["convert", "-background", "black", "-fill", "white",
                 "-font", BOLD if bold else FONT, "-pointsize", "15",
                 "-size", "%dx%d" % (CW, CH), "-gravity", "center",
                 "label:" + text, "-depth", "8", "gray:-"],
                capture_output=True)
            data = r.stdout
            if r.returncode != 0 or len(data) != CW * CH:
                data = bytes(CW * CH)
            _glyphs[key] = data
    return _glyphs[key]


SGR = re.compile(r"\x1b\[([0-9;]*)m")


class Attr:
    def __init__(self):
        self.reset()

    def reset(self):
        self.fg = None
        self.bg = None
        self.bold = self.dim = self.rev = self.ul = False

    def apply(self, params):
        ps = [int(p) if p else 0 for p in params.split(";")] if params else [0]
        i = 0
        while i < len(ps):
            p = ps[i]
            if p == 0:
                self.reset()
            elif p == 1:
                self.bold = True
            elif p == 2:
                self.dim = True
            elif p == 4:
                self.ul = True
            elif p == 7:
                self.rev = True
            elif p == 22:
                self.bold = self.dim = False
            elif p == 24:
                self.ul = False
            elif p == 27:
                self.rev = False
            elif 30 <= p <= 37:
                self.fg = BASE16[p - 30]
            elif p == 39:
                self.fg = None
            elif 40 <= p <= 47:
                self.bg = BASE16[p - 40]
            elif p == 49:
                self.bg = None
            elif 90 <= p <= 97:
                self.fg = BASE16[p - 90 + 8]
            elif 100 <= p <= 107:
                self.bg = BASE16[p - 100 + 8]
            elif p in (38, 48) and i + 1 < len(ps):
                if ps[i + 1] == 5 and i + 2 < len(ps):
                    c = color256(ps[i + 2])
                    i += 2
                elif ps[i + 1] == 2 and i + 4 < len(ps):
                    c = tuple(ps[i + 2:i + 5])
                    i += 4
                else:
                    c = None
                if p == 38:
                    self.fg = c
                else:
                    self.bg = c
            i += 1

    def colors(self):
        fg = self.fg or FG
        bg = self.bg or BG
        if self.rev:
            fg, bg = (self.bg or BG), (self.fg or FG)
        if self.dim:
            fg = tuple(int(c * 0.6 + b * 0.4) for c, b in zip(fg, bg))
        return fg, bg


def parse(text, cols, rows):
    """A grid of (char, fg, bg, bold, underline) cells."""
    grid = [[(" ", FG, BG, False, False)] * cols for _ in range(rows)]
    attr = Attr()
    for y, line in enumerate(text.split("\n")[:rows]):
        x = 0
        pos = 0
        for m in list(SGR.finditer(line)) + [None]:
            end = m.start() if m else len(line)
            for ch in line[pos:end]:
                if x < cols and ch >= " ":
                    fg, bg = attr.colors()
                    grid[y][x] = (ch, fg, bg, attr.bold, attr.ul)
                x += 1
            if m is None:
                break
            attr.apply(m.group(1))
            pos = m.end()
    return grid


def render(grid, cols, rows):
    w, h = cols * CW, rows * CH
    img = bytearray(w * h * 3)
    for y in range(rows):
        for x in range(cols):
            ch, fg, bg, bold, ul = grid[y][x]
            g = glyph(ch, bold)
            for gy in range(CH):
                off = ((y * CH + gy) * w + x * CW) * 3
                row = bytearray()
                for gx in range(CW):
                    a = g[gy * CW + gx]
                    if ul and gy == CH - 2:
                        a = 255
                    if a == 0:
                        row += bytes(bg)
                    else:
                        row += bytes((bg[i] * (255 - a) + fg[i] * a) // 255
                                     for i in range(3))
                img[off:off + CW * 3] = row
    return w, h, bytes(img)


def write_png(path, w, h, rgb):
    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xffffffff)
    raw = b"".join(b"\x00" + rgb[y * w * 3:(y + 1) * w * 3] for y in range(h))
    png = (b"\x89PNG\r\n\x1a\n" +
           chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
           chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


def main():
    src, out = sys.argv[1], sys.argv[2]
    cols = int(sys.argv[3]) if len(sys.argv) > 3 else 160
    rows = int(sys.argv[4]) if len(sys.argv) > 4 else 48
    with open(src, encoding="utf-8", errors="replace") as f:
        text = f.read()
    w, h, rgb = render(parse(text, cols, rows), cols, rows)
    write_png(out, w, h, rgb)


if __name__ == "__main__":
    main()
