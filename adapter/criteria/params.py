"""The typed parameters of each criterion kind, as a trial file writes them (pydantic, validated at load).

A trial definition lists criteria; each names a `kind` (the rule it applies) and that kind's parameters.
These models are the whole vocabulary of a trial file: a protocol amendment that only changes thresholds,
windows, cohorts or codes is a new file, never a code change. Every model forbids unknown keys, so a
misspelt parameter stops the tool at load instead of being silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator


class Params(BaseModel):
    """What every criterion has: the requirement as the protocol states it (shown to clinicians)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = Field(None, description="the requirement in the protocol's words")
    label: str | None = Field(None, description="the criterion in a clinician's words on the card "
                                                "(default: its input's label in observations.yaml)")
    window_days: PositiveInt | None = Field(None, description="look-back for its data; default: the trial's")
    sources: dict[str, str] = Field(default_factory=dict, description="where a parameter's value comes from when "
                                    "it is not the trial record itself (a guideline, a formula's paper, our "
                                    "interpretation): parameter name, or name.key, → source")

    @model_validator(mode="after")
    def _sources_name_parameters(self) -> Params:
        """A source for a parameter the criterion does not set would document nothing: refused at load."""
        data = self.model_dump(by_alias=True, exclude_none=True)
        for path in self.sources:
            name, _, key = path.partition(".")
            value = data.get(name)
            if name in ("text", "label", "sources") or value is None or (key and not (isinstance(value, dict)
                                                                                        and key in value)):
                raise ValueError(f"sources: {path!r} is not a parameter this criterion sets")
        return self

    def inputs(self) -> tuple[str, ...]:
        """Observation inputs (mappings/observations.yaml) this criterion reads."""
        return ()

    def condition_sets(self) -> tuple[str, ...]:
        """Condition code sets (mappings/conditions.yaml) this criterion reads."""
        return ()

    def cohorts(self) -> tuple[str, ...]:
        """Cohorts of the trial this criterion names."""
        return ()


class CohortRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    condition: str = Field(description="condition code set that puts the patient in this cohort")
    cohort: str
    review: str | None = Field(None, description="when set, this diagnosis is `unknown` with this note: "
                                                 "a person decides (e.g. a sarcoma of bone for a soft tissue cohort)")


class Diagnosis(Params):
    """The diagnosis decides the cohort: the first rule whose condition set the patient has applies."""

    text: str
    rules: list[CohortRule] = Field(min_length=1)

    def condition_sets(self) -> tuple[str, ...]:
        return tuple(r.condition for r in self.rules)

    def cohorts(self) -> tuple[str, ...]:
        return tuple(r.cohort for r in self.rules)


class AdvancedDisease(Params):
    """Unresectable or metastatic: a metastasis condition or a metastatic staging/history observation."""

    text: str
    condition: str = "metastasis"
    observations: list[str] = Field(default_factory=list, description="inputs whose coded value can show "
                                                                      "metastatic disease (TNM M1, stage IV)")
    history_input: str = Field("metastatic-history", description="mCODE history of metastatic cancer")

    def inputs(self) -> tuple[str, ...]:
        return (*self.observations, self.history_input)

    def condition_sets(self) -> tuple[str, ...]:
        return (self.condition,)


class MeasurableDisease(Params):
    text: str
    input: str = "tumor-size"
    min_mm: dict[str, PositiveFloat] = Field(description="smallest measurable lesion by method category "
                                                         "(mappings/answers.yaml tumor-method); `unspecified` "
                                                         "for a size without a method")

    def inputs(self) -> tuple[str, ...]:
        return (self.input,)


class PriorTherapy(Params):
    """Prior exposure to a drug class (mappings/medications.yaml), for the cohorts named."""

    text: str
    cohorts_: list[str] = Field(alias="cohorts", min_length=1, description="cohorts the criterion applies to; "
                                                                           "others get not-applicable")
    drugs: Literal["ici"] = "ici"
    progression_input: str = Field("disease-status", description="the cancer disease status observation")

    def inputs(self) -> tuple[str, ...]:
        return (self.progression_input,)

    def cohorts(self) -> tuple[str, ...]:
        return tuple(self.cohorts_)


class NoPriorTherapy(PriorTherapy):
    """No prior exposure: any exposure fails; `when_none_recorded` says what an empty history means."""

    when_none_recorded: Literal["met", "unknown"] = Field(
        description="a history without the drug: `met` (noting outside records must be checked) or `unknown`")


class MinimumAge(Params):
    min_years: PositiveInt


class PerformanceStatus(Params):
    ecog_max: float = Field(ge=0, le=5)
    karnofsky_min: float = Field(ge=0, le=100)
    ecog_input: str = "ecog"
    karnofsky_input: str = "karnofsky"

    def inputs(self) -> tuple[str, ...]:
        return (self.ecog_input, self.karnofsky_input)


class LabMinimum(Params):
    """value >= min, compared in `unit` (the input's canonical unit)."""

    input: str
    min: float
    unit: str
    display_unit: str | None = None

    def inputs(self) -> tuple[str, ...]:
        return (self.input,)


class Quantity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: PositiveFloat
    unit: str
    source: str = Field(description="where the value comes from")


class Modifier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    condition: str = Field(description="condition code set that raises the limit (Gilbert, liver metastases)")
    max_uln: PositiveFloat


class LabUlnMultiple(Params):
    """value <= max_uln x ULN (the result's own ULN, else `default_uln`), raised by `modifier`."""

    input: str
    max_uln: PositiveFloat
    default_uln: Quantity
    modifier: Modifier | None = None

    def inputs(self) -> tuple[str, ...]:
        return (self.input,)

    def condition_sets(self) -> tuple[str, ...]:
        return (self.modifier.condition,) if self.modifier else ()


class RenalFunction(Params):
    """Creatinine <= k x ULN, or Cockcroft-Gault CrCl >= crcl_min mL/min/1.73 m2."""

    input: str = "creatinine"
    creatinine_max_uln: PositiveFloat
    default_uln: Quantity
    crcl_min: PositiveFloat
    female_factor: PositiveFloat
    bsa_formula: Literal["mosteller"] = "mosteller"
    weight: Literal["actual"] = "actual"
    weight_window_days: PositiveInt
    height_window_days: PositiveInt
    formula_validated_from_age: PositiveInt = Field(
        description="below this age the card notes that Cockcroft-Gault is not validated")
    weight_input: str = "weight"
    height_input: str = "height"
    bsa_input: str = "bsa"

    def inputs(self) -> tuple[str, ...]:
        return (self.input, self.weight_input, self.height_input, self.bsa_input)


class HivControlled(Params):
    """HIV infection needs an undetectable viral load in the window (taken as effective ART)."""

    text: str
    condition: str = "hiv"
    input: str = "hiv-viral-load"
    undetectable_below: PositiveFloat
    assay_limit_max: PositiveFloat

    def inputs(self) -> tuple[str, ...]:
        return (self.input,)

    def condition_sets(self) -> tuple[str, ...]:
        return (self.condition,)


class NotPregnant(Params):
    text: str
    hcg_positive_min: PositiveFloat
    hcg_negative_below: PositiveFloat
    # a positive test or status older than the window but newer than this is not passed over: she may be
    # pregnant (or breastfeeding) still — unknown, stale
    positive_relevant_days: PositiveInt
    condition: str = "pregnancy"

    def inputs(self) -> tuple[str, ...]:
        """The status, hCG and breastfeeding observations its rule reads (criteria/patient.py)."""
        return ("pregnancy-status", "hcg-presence", "hcg-quantitative", "breastfeeding")

    def condition_sets(self) -> tuple[str, ...]:
        return (self.condition,)
