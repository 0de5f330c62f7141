"""wavae.device"""
