"""The study report: figures (``figures``) and the HTML/Markdown documents (``document``)."""
