"""Caption datasets: formats, transforms, tokenisation and the Lightning DataModule."""
