import pytest
from mailcore.sanitize import safe_html, text_from_html

# --- safe_html: what goes -----------------------------------------------------------------------


def test_script_element_and_its_content_are_removed():
    assert safe_html("<p>Hi</p><script>alert('x')</script>") == "<p>Hi</p>"


def test_style_element_and_its_content_are_removed():
    assert safe_html("<style>p { color: red }</style><p>Hi</p>") == "<p>Hi</p>"


def test_style_attributes_are_removed():
    assert safe_html('<p style="background:url(https://t.test/x)">Hi</p>') == "<p>Hi</p>"


def test_title_and_head_content_of_a_full_document_is_not_shown():
    html = "<html><head><title>Newsletter</title><meta charset=utf-8></head><body><p>Hi</p></body></html>"

    assert safe_html(html) == "<p>Hi</p>"


@pytest.mark.parametrize("handler", ["onclick", "onload", "onerror", "onmouseover", "ONFOCUS"])
def test_event_handler_attributes_are_removed(handler):
    assert (
        safe_html(f'<p {handler}="alert(1)">Hi</p><img alt="x" {handler}="alert(1)">')
        == '<p>Hi</p><img alt="x">'
    )


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java&#x09;script:alert(1)",
        "&#106;avascript:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "data:image/png;base64,iVBORw0KGgo=",
        "cid:image@example.test",
        "file:///etc/passwd",
        "/relative/path",
        "#anchor",
    ],
)
def test_links_other_than_http_https_and_mailto_lose_their_href(url):
    cleaned = safe_html(f'<a href="{url}">x</a>')

    assert "href" not in cleaned
    assert cleaned.endswith(">x</a>")


@pytest.mark.parametrize(
    "url", ["https://example.test/a?b=1&amp;c=2", "http://example.test/", "mailto:a@example.test"]
)
def test_http_https_and_mailto_links_are_kept(url):
    assert f'href="{url}"' in safe_html(f'<a href="{url}">x</a>')


def test_links_get_rel_noopener_noreferrer_and_open_in_a_new_window():
    html = safe_html('<a href="https://example.test/" rel="opener" target="_self">x</a>')

    assert html == '<a href="https://example.test/" target="_blank" rel="noopener noreferrer">x</a>'


@pytest.mark.parametrize(
    "markup",
    [
        '<form action="https://evil.test/"><input name="password"><button type="submit"></button></form>',
        '<iframe src="https://evil.test/"></iframe>',
        '<object data="https://evil.test/x.swf"></object>',
        '<embed src="https://evil.test/x.swf">',
        '<svg><circle r="5" onload="alert(1)"/><text>svg text</text></svg>',
        "<math><mi>x</mi></math>",
        '<meta http-equiv="refresh" content="0;url=https://evil.test/">',
        '<link rel="stylesheet" href="https://evil.test/x.css">',
        '<base href="https://evil.test/">',
        "<textarea>typed</textarea><select><option>pick</option></select>",
    ],
)
def test_forms_frames_objects_embeds_svg_and_math_are_removed(markup):
    cleaned = safe_html(f"<p>Before</p>{markup}<p>After</p>")

    assert cleaned == "<p>Before</p><p>After</p>"


def test_comments_are_removed():
    assert safe_html("<p>Hi<!-- secret --></p><!--[if mso]><p>Outlook</p><![endif]-->") == "<p>Hi</p>"


@pytest.mark.parametrize(
    "src", ["https://tracker.test/open.gif?id=42", "http://images.test/logo.png", "//cdn.test/x.png"]
)
def test_remote_images_lose_their_src_and_keep_alt_and_size(src):
    cleaned = safe_html(f'<img src="{src}" alt="Logo" width="120" height="40">')

    assert "src" not in cleaned
    assert all(kept in cleaned for kept in ('alt="Logo"', 'width="120"', 'height="40"'))


def test_images_sent_within_the_mail_by_content_id_are_kept():
    assert (
        safe_html('<img src="cid:logo@example.test" alt="Logo">')
        == '<img src="cid:logo@example.test" alt="Logo">'
    )


@pytest.mark.parametrize("kind", ["png", "gif", "jpeg", "webp"])
def test_inline_raster_data_images_are_kept(kind):
    img = f'<img src="data:image/{kind};base64,AAAA">'

    assert safe_html(img) == img


@pytest.mark.parametrize(
    "url", ["data:image/svg+xml;base64,PHN2Zz4=", "data:text/html,<script>x</script>", "javascript:x"]
)
def test_other_image_sources_are_removed(url):
    assert safe_html(f'<img src="{url}" alt="x">') == '<img alt="x">'


def test_background_attribute_is_removed():
    assert safe_html('<table background="https://t.test/bg.gif"><tr><td>x</td></tr></table>') == (
        "<table><tbody><tr><td>x</td></tr></tbody></table>"
    )


def test_ids_and_classes_are_removed():
    assert safe_html('<div id="main" class="x" name="n">Hi</div>') == "<div>Hi</div>"


# --- safe_html: what stays ----------------------------------------------------------------------


def test_formatting_markup_is_kept():
    html = (
        "<h1>T</h1><h6>t</h6><p><b>b</b> <i>i</i> <u>u</u> <em>e</em> <strong>s</strong> <s>s</s> <strike>s</strike> "
        "<small>s</small> <big>b</big> <sub>1</sub> <sup>2</sup> <code>c</code></p><br><hr>"
        "<blockquote>q</blockquote><pre>  p</pre><ul><li>a</li></ul><ol><li>b</li></ol><center>c</center>"
    )

    assert safe_html(html) == html


def test_table_markup_and_presentational_attributes_are_kept():
    html = (
        '<table width="600" border="0" cellpadding="2" cellspacing="0" bgcolor="#ffffff" align="center">'
        '<thead><tr><th colspan="2" align="left">H</th></tr></thead>'
        '<tbody><tr><td rowspan="1" width="50%" valign="top" bgcolor="#eee">a</td>'
        '<td><font color="red" face="Arial" size="2">b</font></td></tr></tbody></table>'
    )

    assert safe_html(html) == html


def test_text_direction_language_and_title_attributes_are_kept():
    html = '<div dir="rtl" lang="ar" title="t"><span>مرحبا</span></div>'

    assert safe_html(html) == html


def test_output_is_well_formed_html():
    # Parsed as a browser parses it (HTML5 reopens the unclosed formatting in the div), then closed.
    assert safe_html("<p><b>unclosed <i>tags</p><div>x") == (
        "<p><b>unclosed <i>tags</i></b></p><div><b><i>x</i></b></div>"
    )


def test_text_is_escaped():
    assert safe_html("a &lt;script&gt; 1 < 2 & 3") == "a &lt;script&gt; 1 &lt; 2 &amp; 3"


def test_empty_html_stays_empty():
    assert safe_html("") == ""


def test_nuls_are_removed():
    assert safe_html("<p>a\x00b</p>") == "<p>ab</p>"


# --- text_from_html -----------------------------------------------------------------------------


def test_text_paragraphs_and_headings_are_separated_by_a_blank_line():
    assert text_from_html("<h1>Title</h1><p>One.</p><p>Two.</p>") == "Title\n\nOne.\n\nTwo."


def test_text_divs_start_new_lines():
    assert text_from_html("<div>one</div><div>two</div>") == "one\ntwo"


def test_text_br_breaks_the_line():
    assert text_from_html("one<br>two<br/>three") == "one\ntwo\nthree"


def test_text_list_items_start_with_a_dash():
    assert text_from_html("<p>Items:</p><ul><li>one</li><li>two</li></ul>") == "Items:\n\n- one\n- two"


def test_text_ordered_list_items_are_numbered_and_nested_lists_indented():
    assert text_from_html("<ol><li>a<ul><li>x</li></ul></li><li>b</li></ol>") == "1. a\n  - x\n2. b"


def test_text_link_shows_its_url_when_the_text_differs():
    assert (
        text_from_html('Read <a href="https://x.test/a">the post</a>.') == "Read the post (https://x.test/a)."
    )


def test_text_link_whose_text_is_its_url_shows_it_once():
    assert text_from_html('<a href="https://x.test/">https://x.test/</a>') == "https://x.test/"


def test_text_mailto_link_shows_the_address():
    assert text_from_html('<a href="mailto:a@x.test">Write us</a>') == "Write us (a@x.test)"
    assert text_from_html('<a href="mailto:a@x.test">a@x.test</a>') == "a@x.test"


def test_text_link_with_another_scheme_shows_no_url():
    assert text_from_html('<a href="javascript:x()">Click</a>') == "Click"


def test_text_entities_are_decoded():
    assert (
        text_from_html("Fish &amp; chips &lt;3 &euro;5&nbsp;each &#8211; ok")
        == "Fish & chips <3 €5 each \u2013 ok"
    )


def test_text_script_style_and_title_content_is_dropped():
    html = "<html><head><title>T</title><style>p{}</style></head><body><script>x()</script><p>Body</p></body></html>"

    assert text_from_html(html) == "Body"


def test_text_whitespace_collapses_as_in_a_browser():
    assert text_from_html("<p>  lots   of\n\n   space\t here  </p>") == "lots of space here"


def test_text_pre_keeps_its_whitespace():
    assert text_from_html("<p>Code:</p><pre>\nif x:\n    y()\n</pre>") == "Code:\n\nif x:\n    y()"


def test_text_has_at_most_two_blank_lines_in_a_row():
    assert text_from_html("a<br><br><br><br><br><br>b<p></p><p></p><br><br><br>c") == "a\n\n\nb\n\n\nc"


def test_text_blockquote_is_quoted():
    html = "<p>Sure.</p><blockquote><p>Can you?</p><blockquote>Nested</blockquote></blockquote><p>Bye</p>"

    assert text_from_html(html) == "Sure.\n\n> Can you?\n>\n>> Nested\n\nBye"


def test_text_table_rows_are_lines_and_cells_are_separated():
    html = "<table><tr><th>Item</th><th>Price</th></tr><tr><td>Tea</td><td>3 €</td></tr></table>"

    assert text_from_html(html) == "Item Price\nTea 3 €"


def test_text_image_shows_its_alt_text():
    assert (
        text_from_html('See <img src="cid:x" alt="the chart"> and <img src="cid:y">.')
        == "See [the chart] and ."
    )


def test_text_invisible_preview_padding_is_removed():
    assert text_from_html("<span>Hi&zwnj;&nbsp;&zwnj;&nbsp;&#8203;&shy;</span> there") == "Hi there"


def test_text_of_empty_html_is_empty():
    assert text_from_html("") == ""


@pytest.mark.parametrize(
    "html",
    [
        "<",
        "<p",
        "</a></b>",
        "<a href=",
        "<!--",
        "<![CDATA[x",
        "&#xffffffff;",
        "<ol><li>",
        "<![ if",
        "<![foo]>",
    ],
)
def test_text_of_broken_html_does_not_raise(html):
    assert isinstance(text_from_html(html), str)


def test_text_keeps_markup_like_text_that_is_no_markup():
    assert text_from_html("a <![foo]> b") == "a <![foo]> b"


def test_lone_surrogates_become_replacement_characters():
    assert safe_html("<p>a\ud800b</p>") == "<p>a\ufffdb</p>"
