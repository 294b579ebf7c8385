"""The journal note of one answered alarm: VKP's FHIR R4 document, built purely (issue 17).

- `codes.py`: the VKP code systems the document uses, as data;
- `mapping.py`: alarm kind -> VKP codes and the cause/action choices (from the rules
  file), and the check that every exported kind has one;
- `document.py`: the inputs and the decision whether there is a note to send;
- `bundle.py`: the Bundle itself, byte-identical for the same inputs.

National identity and organisation numbers are checked by core/national_id.py.
No I/O and no clock: every time in the document comes from the alarm and its timeline.
"""
