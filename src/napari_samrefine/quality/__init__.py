"""Label-free quality signals of refined objects: does a refined mask beat its coarse one?"""
