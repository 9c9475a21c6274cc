#pragma once
// Wan's prompt cleaning before the umT5 tokenizer (wan/modules/tokenizers.py, clean='whitespace'):
//   basic_clean:      ftfy.fix_text(text), then html.unescape twice, then str.strip();
//   whitespace_clean: every run of `regex` \s becomes one space, then str.strip().
// Everything but ftfy is reproduced exactly (tests/data/tokenizer compares with Python). ftfy is
// not. On clean text it changes nothing; with its defaults (checked with ftfy 6.3.1) it repairs
// mojibake ("CafÃ©" -> "Café"), straightens curly quotes (U+2018-U+201F, U+02BC -> ' and "),
// decodes HTML entities any number of times when the text has no '<' ("&amp;amp;amp;" -> "&",
// where two html.unescape calls leave "&amp;"), removes terminal escapes and most control
// characters, and applies NFC, width and ligature fixes. A SentencePiece model that normalises
// with NFKC (the trainer's default, nmt_nfkc) undoes the last three; curly quotes are the common
// case that still gives other tokens than the official pipeline.
//
// Text is UTF-8; Python works on code points, so these functions do too.
#include <string>
#include <string_view>

namespace fisdit::wan {

// Python's html.unescape (3.11): &#NN; and &#xHH; with the HTML5 rules for invalid numbers (NUL,
// surrogates and values above U+10FFFF give U+FFFD, 0x80-0x9F are read as windows-1252, 0x0D gives
// CR, the other C0/C1 controls and the noncharacters are dropped); named references of the HTML 4
// set (plus &apos; and the upper-case aliases &AMP; &LT; &GT; &QUOT; &COPY; &REG;) with HTML5's
// code points (&lang; and &rang; are U+27E8/U+27E9 as in HTML5, not HTML 4's U+2329/U+232A); the
// 106 legacy names that HTML5 accepts without ';' (&amp, &eacute, ...) also as the longest prefix
// of a longer name (&ampx -> &x), as Python does.
// Differs from Python only on the ~2000 HTML5 names outside that set (&check;, &hbar;, &NewLine;,
// the multi-code-point ones, ...): they are left as they are.
std::string html_unescape(std::string_view text);

// Python's str.isspace() (what str.strip() removes): the `regex` \s set plus U+001C..U+001F.
bool is_python_space(char32_t c);
// The `regex` module's \s on str patterns (Unicode White_Space): \t \n \v \f \r, space, U+0085,
// U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
bool is_regex_space(char32_t c);

// str.strip(): leading and trailing is_python_space code points removed.
std::string strip_python_space(std::string_view text);
// regex.sub(r'\s+', ' ', text).strip()
std::string collapse_whitespace(std::string_view text);

// whitespace_clean(basic_clean(text)) without ftfy. Throws when `text` is not valid UTF-8.
std::string clean_prompt(std::string_view text);

}  // namespace fisdit::wan
