print("vq")
