"""Reading and writing images, masks, RT structure sets and cohort manifests."""
