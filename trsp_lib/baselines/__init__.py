"""What TRSP is compared with: the layer-selection criteria (`criteria`: ShortGPT, SLEB, LaCo, ...), SLEB's
candidates scored with their shared prefix computed once (`shared_prefix`), and the closed-form compensation
of removed layers (`compensation`, the `lin` edit)."""
