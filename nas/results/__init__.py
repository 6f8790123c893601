"""What a user takes away from a search: queries of its results, the exported model files and the
report.

``query`` finds a search's study, its winner and its trials (reads only); ``export`` writes a
trained network as files that run without this package; ``report`` writes one self-contained HTML
page and CSV of a search.
"""
