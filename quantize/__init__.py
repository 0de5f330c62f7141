"""wavae.quantize"""
