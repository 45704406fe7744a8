"""Study 1, optimizer selection under shift (Naganuma et al. 2023): DomainBed model selection."""
